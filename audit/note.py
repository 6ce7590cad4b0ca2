"""C2SP signed notes (c2sp.org/signed-note) and tlog checkpoints (c2sp.org/tlog-checkpoint), Ed25519.

A checkpoint note looks like::

    example.org/govsvc-audit
    1234
    <base64 of the 32-byte root hash>
    <optional extension lines>

    — example.org/govsvc-audit <base64(4-byte key id || 64-byte Ed25519 signature)>

The signature covers the body (everything before the blank line) exactly.
Keys are exchanged as strings in the Go ``golang.org/x/mod/sumdb/note`` format:
the verifier key ``<name>+<8 hex key id>+<base64(0x01 || public key)>`` and the
signer key ``PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || seed)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "Checkpoint",
    "NoteError",
    "NoteFormatError",
    "NoteSignature",
    "NoteSignatureError",
    "Signer",
    "Verifier",
    "checkpoint_body",
    "generate_signer",
    "key_id",
    "parse_checkpoint",
    "parse_checkpoint_body",
    "parse_note",
    "parse_skey",
    "parse_vkey",
    "sign_checkpoint",
    "sign_note",
    "verify_note",
]

ALG_ED25519 = 0x01
MAX_NOTE_SIZE = 1 << 20
HASH_SIZE = 32
_MAX_TREE_SIZE = (1 << 64) - 1
_EM_DASH = "\u2014"
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}", re.ASCII)
_HEX8_RE = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)


class NoteError(ValueError):
    """A note, checkpoint or key cannot be used."""


class NoteFormatError(NoteError):
    """The text is not a well-formed signed note, checkpoint or key."""


class NoteSignatureError(NoteError):
    """The note is not validly signed by any of the trusted keys."""


def _b64decode(text: str, what: str) -> bytes:
    """Strictly decode standard base64 (canonical, padded)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteFormatError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteFormatError(f"{what} is not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    """Encode as standard base64."""
    return base64.b64encode(raw).decode("ascii")


def _check_key_name(name: str) -> None:
    """Key names are non-empty, without ``+``, spaces or control characters."""
    if not isinstance(name, str) or not name:
        raise NoteFormatError("key name must be a non-empty string")
    if "+" in name or any(c.isspace() or c < " " for c in name):
        raise NoteFormatError(f"key name {name!r} contains '+', a space or a control character")


def key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> int:
    """Return the key id: the first 4 bytes (big-endian) of SHA-256(name || 0x0A || alg || key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 note verifier key."""

    name: str
    key_id: int
    public_key: bytes

    @property
    def vkey(self) -> str:
        """The verifier key string ``<name>+<hex id>+<base64(0x01 || key)>``."""
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([ALG_ED25519]) + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """An Ed25519 note signer key (the seed is kept out of ``repr``)."""

    name: str
    key_id: int
    seed: bytes = field(repr=False)

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        pub = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def verifier(self) -> Verifier:
        """The matching verifier."""
        return Verifier(self.name, self.key_id, self.public_key)

    @property
    def skey(self) -> str:
        """The signer key string ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>``."""
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{_b64(bytes([ALG_ED25519]) + self.seed)}"

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def generate_signer(name: str) -> tuple[str, str]:
    """Generate a new Ed25519 key named ``name``; return ``(skey, vkey)``."""
    _check_key_name(name)
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    pub = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signer = Signer(name, key_id(name, pub), seed)
    return signer.skey, signer.verifier.vkey


def _parse_key(parts: Sequence[str], what: str) -> tuple[str, int, bytes]:
    """Parse ``name``, ``hex id`` and ``base64(alg || key)`` fields of a key string."""
    name, hex_id, data = parts
    _check_key_name(name)
    if not _HEX8_RE.fullmatch(hex_id):
        raise NoteFormatError(f"{what}: key id must be 8 hex digits")
    raw = _b64decode(data, f"{what} key data")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteFormatError(f"{what}: only Ed25519 keys (type 0x01, 32 bytes) are supported")
    return name, int(hex_id, 16), raw[1:]


def parse_vkey(vkey: str) -> Verifier:
    """Parse a verifier key string, checking that its key id matches the key."""
    if not isinstance(vkey, str):
        raise NoteFormatError("verifier key must be a string")
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteFormatError("verifier key must look like <name>+<hex id>+<base64 key>")
    name, kid, pub = _parse_key(parts, "verifier key")
    try:
        Ed25519PublicKey.from_public_bytes(pub)
    except ValueError:
        raise NoteFormatError("verifier key is not a valid Ed25519 public key") from None
    if key_id(name, pub) != kid:
        raise NoteFormatError("verifier key id does not match its name and key")
    return Verifier(name, kid, pub)


def parse_skey(skey: str) -> Signer:
    """Parse a signer key string, checking that its key id matches the key."""
    if not isinstance(skey, str):
        raise NoteFormatError("signer key must be a string")
    parts = skey.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteFormatError("signer key must look like PRIVATE+KEY+<name>+<hex id>+<base64 seed>")
    name, kid, seed = _parse_key(parts[2:], "signer key")
    signer = Signer(name, kid, seed)
    if key_id(name, signer.public_key) != kid:
        raise NoteFormatError("signer key id does not match its name and key")
    return signer


# --------------------------------------------------------------------------- notes


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note (not necessarily verified)."""

    name: str
    key_id: int
    signature: bytes


def _check_text(text: str) -> None:
    """Common note text rules: UTF-8, size limit, no control characters but newline."""
    if not isinstance(text, str):
        raise NoteFormatError("note must be a string")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise NoteFormatError("note is not valid UTF-8") from None
    if size > MAX_NOTE_SIZE:
        raise NoteFormatError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    if any(c < " " and c != "\n" for c in text):
        raise NoteFormatError("note contains a control character")


def parse_note(text: str) -> tuple[str, tuple[NoteSignature, ...]]:
    """Split a signed note into its body (with final newline) and its signature lines.

    Signatures are parsed, not verified.
    """
    _check_text(text)
    if not text.endswith("\n"):
        raise NoteFormatError("note does not end with a newline")
    sep = text.rfind("\n\n")
    if sep < 0:
        raise NoteFormatError("note has no blank line before its signatures")
    body, block = text[: sep + 1], text[sep + 2 :]
    if not block:
        raise NoteFormatError("note has no signatures")
    signatures = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_EM_DASH + " "):
            raise NoteFormatError("signature line does not start with an em dash and a space")
        fields = line[2:].split(" ")
        if len(fields) != 2:
            raise NoteFormatError("signature line must be '— <key name> <base64 signature>'")
        name, sig_b64 = fields
        _check_key_name(name)
        raw = _b64decode(sig_b64, "signature")
        if len(raw) < 5:
            raise NoteFormatError("signature is too short")
        signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return body, tuple(signatures)


def sign_note(body: str, skeys: str | Iterable[str]) -> str:
    """Sign a note body (which must end with a newline) with one or more signer keys."""
    _check_text(body)
    if not body.endswith("\n") or body.startswith("\n") or "\n\n" in body:
        raise NoteFormatError("note body must be non-empty lines, each ending with a newline")
    signers = [parse_skey(skeys)] if isinstance(skeys, str) else [parse_skey(k) for k in skeys]
    if not signers:
        raise NoteFormatError("at least one signer key is needed")
    message = body.encode("utf-8")
    lines = [body, "\n"]
    for signer in signers:
        sig = signer.key_id.to_bytes(4, "big") + signer.sign(message)
        lines.append(f"{_EM_DASH} {signer.name} {_b64(sig)}\n")
    return "".join(lines)


# ----------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint; ``verified_by`` lists the key names whose signatures were verified."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()
    signatures: tuple[NoteSignature, ...] = ()
    verified_by: tuple[str, ...] = ()

    @property
    def body(self) -> str:
        """The signed note body of this checkpoint."""
        return checkpoint_body(self.origin, self.size, self.root, self.extensions)


def checkpoint_body(origin: str, size: int, root: bytes, extensions: Iterable[str] = ()) -> str:
    """Return the checkpoint note body ``origin\\nsize\\nbase64(root)\\n[extension lines]``."""
    if not isinstance(origin, str) or not origin or "\n" in origin:
        raise NoteFormatError("origin must be a non-empty single line")
    if type(size) is not int or not 0 <= size <= _MAX_TREE_SIZE:
        raise NoteFormatError("tree size must be an integer in [0, 2**64)")
    if not isinstance(root, bytes | bytearray) or len(root) != HASH_SIZE:
        raise NoteFormatError("root hash must be 32 bytes")
    ext = list(extensions)
    for line in ext:
        if not isinstance(line, str) or not line or "\n" in line:
            raise NoteFormatError("extension lines must be non-empty single lines")
    body = "".join(f"{line}\n" for line in [origin, str(size), _b64(bytes(root)), *ext])
    _check_text(body)
    return body


def parse_checkpoint_body(body: str) -> tuple[str, int, bytes, tuple[str, ...]]:
    """Strictly parse a checkpoint body into ``(origin, size, root, extensions)``."""
    if not body.endswith("\n"):
        raise NoteFormatError("checkpoint body does not end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise NoteFormatError("checkpoint needs origin, tree size and root hash lines")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise NoteFormatError("checkpoint origin is empty")
    if not _SIZE_RE.fullmatch(size_text) or int(size_text) > _MAX_TREE_SIZE:
        raise NoteFormatError("checkpoint tree size is not a decimal number without leading zeros")
    root = _b64decode(root_text, "checkpoint root hash")
    if len(root) != HASH_SIZE:
        raise NoteFormatError("checkpoint root hash is not 32 bytes")
    if any(not line for line in extensions):
        raise NoteFormatError("checkpoint extension lines must not be empty")
    return origin, int(size_text), root, tuple(extensions)


def sign_checkpoint(
    origin: str, size: int, root: bytes, skey: str | Iterable[str], extensions: Iterable[str] = ()
) -> str:
    """Return the full signed note text of a checkpoint."""
    return sign_note(checkpoint_body(origin, size, root, extensions), skey)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a signed checkpoint note WITHOUT verifying its signatures (see ``verify_note``)."""
    body, signatures = parse_note(text)
    origin, size, root, extensions = parse_checkpoint_body(body)
    return Checkpoint(origin, size, root, extensions, signatures)


def _verifiers(vkeys: Iterable[str | Verifier]) -> dict[tuple[str, int], Verifier]:
    """Index verifier keys by (name, key id), rejecting ambiguous duplicates."""
    known: dict[tuple[str, int], Verifier] = {}
    for k in vkeys:
        v = k if isinstance(k, Verifier) else parse_vkey(k)
        prev = known.setdefault((v.name, v.key_id), v)
        if prev != v:
            raise NoteFormatError(f"two different verifier keys share name {v.name!r} and id")
    return known


def verify_note(text: str, vkeys: Iterable[str | Verifier]) -> Checkpoint:
    """Parse a checkpoint note and verify it against trusted verifier keys.

    At least one signature by a trusted key must verify; signatures by unknown
    keys are ignored, and a signature by a trusted key that does not verify is
    an error (``NoteSignatureError``). Malformed text raises ``NoteFormatError``.
    """
    known = _verifiers(vkeys)
    if not known:
        raise NoteSignatureError("no trusted verifier keys given")
    checkpoint = parse_checkpoint(text)
    message = text[: text.rfind("\n\n") + 1].encode("utf-8")
    verified = []
    for sig in checkpoint.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, sig.signature):
            raise NoteSignatureError(f"signature by trusted key {sig.name!r} does not verify")
        if sig.name not in verified:
            verified.append(sig.name)
    if not verified:
        names = ", ".join(sorted({s.name for s in checkpoint.signatures}))
        raise NoteSignatureError(f"note is not signed by any trusted key (signed by: {names})")
    return Checkpoint(
        checkpoint.origin,
        checkpoint.size,
        checkpoint.root,
        checkpoint.extensions,
        checkpoint.signatures,
        tuple(verified),
    )
