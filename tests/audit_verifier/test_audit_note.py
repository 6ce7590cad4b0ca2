"""Signed note and checkpoint tests (C2SP signed-note, tlog-checkpoint, Ed25519)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import note
from audit.note import NoteFormatError, NoteSignatureError

ORIGIN = "example.org/govsvc-audit"
ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return note.generate_signer(ORIGIN)


def test_key_strings(keys) -> None:
    skey, vkey = keys
    name, hex_id, key_b64 = vkey.split("+", 2)
    raw = base64.b64decode(key_b64)
    assert name == ORIGIN and len(hex_id) == 8 and raw[0] == 0x01 and len(raw) == 33
    expected_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw[1:]).digest()[:4].hex()
    assert hex_id == expected_id
    assert skey.startswith(f"PRIVATE+KEY+{ORIGIN}+{hex_id}+")
    signer = note.parse_skey(skey)
    assert signer.verifier == note.parse_vkey(vkey)
    assert signer.verifier.vkey == vkey and signer.skey == skey
    assert "seed" not in repr(signer)


def test_sign_and_verify_checkpoint(keys) -> None:
    skey, vkey = keys
    text = note.sign_checkpoint(ORIGIN, 1234, ROOT, skey)
    body = f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\n"
    assert text.startswith(body + "\n\u2014 " + ORIGIN + " ")
    assert text.endswith("\n") and text.count("\n") == 5
    sig = base64.b64decode(text.rsplit(" ", 1)[1])
    assert len(sig) == 68 and sig[:4].hex() == vkey.split("+")[1]
    # The signature is over the body bytes exactly.
    Ed25519PublicKey.from_public_bytes(note.parse_vkey(vkey).public_key).verify(sig[4:], body.encode())
    cp = note.verify_note(text, [vkey])
    assert (cp.origin, cp.size, cp.root, cp.extensions) == (ORIGIN, 1234, ROOT, ())
    assert cp.verified_by == (ORIGIN,) and cp.body == body
    assert note.parse_checkpoint(text).signatures[0].name == ORIGIN


def test_extension_lines_are_kept(keys) -> None:
    skey, vkey = keys
    text = note.sign_checkpoint(ORIGIN, 7, ROOT, skey, extensions=["ext one", "ext two"])
    cp = note.verify_note(text, [vkey])
    assert cp.extensions == ("ext one", "ext two") and cp.size == 7


def test_empty_tree_checkpoint(keys) -> None:
    skey, vkey = keys
    empty = hashlib.sha256(b"").digest()
    assert note.verify_note(note.sign_checkpoint(ORIGIN, 0, empty, skey), [vkey]).size == 0


def test_unknown_signatures_are_ignored_and_cosigning_works(keys) -> None:
    skey, vkey = keys
    witness_skey, witness_vkey = note.generate_signer("witness.example/w1")
    text = note.sign_checkpoint(ORIGIN, 5, ROOT, [skey, witness_skey])
    assert note.verify_note(text, [vkey]).verified_by == (ORIGIN,)
    assert note.verify_note(text, [witness_vkey]).verified_by == ("witness.example/w1",)
    assert note.verify_note(text, [vkey, witness_vkey]).verified_by == (ORIGIN, "witness.example/w1")
    stranger_sig = base64.b64encode(b"\x00\x01\x02\x03" + b"x" * 64).decode()
    stranger_line = f"\u2014 stranger.example {stranger_sig}\n"
    assert note.verify_note(text + stranger_line, [vkey]).size == 5


def test_wrong_key_is_rejected(keys) -> None:
    skey, _ = keys
    _, other_vkey = note.generate_signer(ORIGIN)
    text = note.sign_checkpoint(ORIGIN, 5, ROOT, skey)
    with pytest.raises(NoteSignatureError, match="not signed by any trusted key"):
        note.verify_note(text, [other_vkey])
    with pytest.raises(NoteSignatureError):
        note.verify_note(text, [])


def test_bad_signature_by_known_key_is_an_error(keys) -> None:
    skey, vkey = keys
    text = note.sign_checkpoint(ORIGIN, 5, ROOT, skey)
    body, sig_line = text.split("\n\n")
    name, sig_b64 = sig_line[2:-1].split(" ")
    sig = bytearray(base64.b64decode(sig_b64))
    sig[10] ^= 1
    forged = body + "\n\n\u2014 " + name + " " + base64.b64encode(bytes(sig)).decode() + "\n"
    with pytest.raises(NoteSignatureError, match="does not verify"):
        note.verify_note(forged, [vkey])
    changed = text.replace("\n5\n", "\n6\n", 1)
    with pytest.raises(NoteSignatureError):
        note.verify_note(changed, [vkey])


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda t: t[:-1], id="no-final-newline"),
        pytest.param(lambda t: t + "garbage", id="trailing-garbage"),
        pytest.param(lambda t: t + "\n", id="trailing-blank-line"),
        pytest.param(lambda t: t.replace("\n5\n", "\n05\n", 1), id="leading-zero"),
        pytest.param(lambda t: t.replace("\n5\n", "\n+5\n", 1), id="plus-sign"),
        pytest.param(lambda t: t.replace("\n5\n", "\n\u0665\n", 1), id="non-ascii-digit"),
        pytest.param(lambda t: t.replace("\n5\n", "\n-1\n", 1), id="negative"),
        pytest.param(lambda t: t.replace("\n5\n", "\n18446744073709551616\n", 1), id="size-too-big"),
        pytest.param(lambda t: t.replace("=\n", "\n", 1), id="root-unpadded"),
        pytest.param(lambda t: t.replace("=\n\n", "AAAA=\n\n", 1), id="root-33-bytes"),
        pytest.param(lambda t: t.replace("\n\n", "\n\n\n", 1), id="empty-extension-line"),
        pytest.param(lambda t: t.replace(ORIGIN + "\n", "\n", 1), id="empty-origin"),
        pytest.param(lambda t: t.split("\n\n")[0] + "\n", id="no-signatures"),
        pytest.param(lambda t: t.replace("\u2014", "-", 1), id="hyphen-not-em-dash"),
        pytest.param(lambda t: t.replace("\u2014 ", "\u2014  ", 1), id="double-space"),
        pytest.param(lambda t: t.replace("\n5\n", "\n5\r\n", 1), id="carriage-return"),
        pytest.param(lambda t: t[:-3] + "!" + t[-2:], id="bad-signature-base64"),
        pytest.param(lambda t: t + "x" * (1 << 20), id="too-large"),
    ],
)
def test_malformed_notes_are_rejected(keys, mutate) -> None:
    skey, vkey = keys
    text = note.sign_checkpoint(ORIGIN, 5, ROOT, skey)
    note.verify_note(text, [vkey])
    with pytest.raises(NoteFormatError):
        note.verify_note(mutate(text), [vkey])


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "name+0000abcd",
        "name+zzzzzzzz+AQ==",
        "name+0000abcd+" + base64.b64encode(b"\x01" + bytes(32)).decode(),  # id does not match
        "na me+0000abcd+" + base64.b64encode(b"\x01" + bytes(32)).decode(),
        "name+0000abcd+" + base64.b64encode(b"\x02" + bytes(32)).decode(),
    ],
)
def test_bad_verifier_keys(vkey) -> None:
    with pytest.raises(NoteFormatError):
        note.parse_vkey(vkey)


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\u00a0b", "a\u2003b", "a\tb"])
def test_bad_key_names(name) -> None:
    with pytest.raises(NoteFormatError):
        note.generate_signer(name)


def test_checkpoint_body_validation(keys) -> None:
    skey, _ = keys
    with pytest.raises(NoteFormatError):
        note.sign_checkpoint(ORIGIN, 5, b"short", skey)
    with pytest.raises(NoteFormatError):
        note.sign_checkpoint("", 5, ROOT, skey)
    with pytest.raises(NoteFormatError):
        note.sign_checkpoint(ORIGIN, -1, ROOT, skey)
    with pytest.raises(NoteFormatError):
        note.sign_checkpoint(ORIGIN, 5, ROOT, skey, extensions=[""])
    with pytest.raises(NoteFormatError):
        note.sign_checkpoint(ORIGIN, 5, ROOT, "PRIVATE+KEY+broken")
