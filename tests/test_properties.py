"""Hypothesis properties of the Merkle proofs (RFC 9162) and the token format. (The consent projection's property
test lives in tests/test_consent.py.)"""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from audit import merkle
from govsvc.crypto import tokens
from govsvc.crypto.tokens import Ciphers, TokenError
from tests.support.asserts import assert_problem


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, written from the definition (recursive, k = largest power of two below n)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(_reference_root(leaves[:split]), _reference_root(leaves[split:]))


def _subtree(leaves: list[bytes]):
    return lambda start, end: _reference_root(leaves[start:end])


LEAVES = st.lists(st.binary(max_size=12), min_size=1, max_size=70).map(lambda raw: [merkle.leaf_hash(d) for d in raw])


@settings(max_examples=150, deadline=None)
@given(leaves=LEAVES, data=st.data())
def test_inclusion_proofs_verify_and_nothing_else_does(leaves: list[bytes], data: st.DataObject) -> None:
    size = len(leaves)
    root = merkle.root_from_leaf_hashes(leaves)
    assert root == _reference_root(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(index, size, _subtree(leaves))
    merkle.verify_inclusion(leaves[index], index, size, proof, root)
    other = data.draw(st.integers(0, size - 1))
    if leaves[other] != leaves[index]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(leaves[other], index, size, proof, root)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        tampered = [*proof]
        tampered[position] = bytes([tampered[position][0] ^ 1]) + tampered[position][1:]
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(leaves[index], index, size, tampered, root)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(leaves[index], index, size, proof[:-1], root)


@settings(max_examples=150, deadline=None)
@given(leaves=LEAVES, data=st.data())
def test_consistency_proofs_verify_between_any_two_sizes(leaves: list[bytes], data: st.DataObject) -> None:
    new_size = len(leaves)
    old_size = data.draw(st.integers(1, new_size))
    old_root, new_root = _reference_root(leaves[:old_size]), _reference_root(leaves)
    proof = merkle.consistency_proof(old_size, new_size, _subtree(leaves))
    merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
    assume(old_size < new_size)
    forged_old = _reference_root([merkle.leaf_hash(b"forged"), *leaves[1:old_size]])
    assume(forged_old != old_root)
    with pytest.raises(merkle.ProofError):  # a rewritten history is not consistent with the new tree
        merkle.verify_consistency(old_size, new_size, forged_old, new_root, proof)


KEY_IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_:", min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    key_id=KEY_IDS,
    version=st.integers(1, 2**32 - 1),
    plaintext=st.binary(max_size=200),
    field=st.text(min_size=1, max_size=20),
    deterministic=st.booleans(),
)
def test_tokens_round_trip_and_describe_themselves(
    key_id: str, version: int, plaintext: bytes, field: str, deterministic: bool
) -> None:
    ciphers = Ciphers.of(key_id, version, os.urandom(32))
    bound = tokens.context("default", "sub_a", field)
    token = tokens.seal(ciphers, plaintext, bound, deterministic=deterministic)
    header = tokens.parse_header(token)
    assert (header.key_id, header.key_version) == (key_id, version)
    assert header.format == (tokens.FORMAT_SIV if deterministic else tokens.FORMAT_GCM)
    text = tokens.to_text(token)
    assert text.startswith(tokens.TEXT_PREFIX) and tokens.from_text(text) == token
    assert tokens.open_sealed(ciphers, token, bound) == plaintext
    assert tokens.open_sealed(ciphers, token, bound, tokens.parse_header(token)) == plaintext
    if deterministic:
        assert tokens.seal(ciphers, plaintext, bound, deterministic=True) == token


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=64), data=st.data(), deterministic=st.booleans())
def test_any_altered_byte_or_other_binding_fails_to_open(
    plaintext: bytes, data: st.DataObject, deterministic: bool
) -> None:
    ciphers = Ciphers.of("subject:sub_a", 1, os.urandom(32))
    bound = tokens.context("default", "sub_a", "mobile")
    token = tokens.seal(ciphers, plaintext, bound, deterministic=deterministic)
    position = data.draw(st.integers(0, len(token) - 1))
    flip = data.draw(st.integers(1, 255))
    altered = token[:position] + bytes([token[position] ^ flip]) + token[position + 1 :]
    with pytest.raises(TokenError):
        tokens.open_sealed(ciphers, altered, bound)
    with pytest.raises(TokenError):
        tokens.open_sealed(ciphers, token, tokens.context("default", "sub_b", "mobile"))
    with pytest.raises(TokenError):
        tokens.open_sealed(ciphers, token[: data.draw(st.integers(0, len(token) - 1))], bound)


@given(text=st.text(max_size=80))
def test_arbitrary_text_is_never_a_crash(text: str) -> None:
    """Whatever a caller sends as a token, the parser answers with a token or a TokenError, nothing else."""
    try:
        token = tokens.from_text(text)
        tokens.parse_header(token)
    except TokenError:
        pass


def test_a_truncated_token_is_undecryptable_not_a_server_error(client, auth_headers) -> None:
    """Found by the property above: a token cut after its header reached AES-GCM with a short nonce (a 500)."""
    app_key = auth_headers("app")
    body = {"identifiers": [{"kind": "crm_id", "value": "P-1", "system": "crm"}], "jurisdictions": ["pipl"]}
    subject = client.post("/v1/subjects", json=body, headers=app_key).get_json()["subject_id"]
    sealed = client.post(
        "/v1/crypto/encrypt",
        json={"subject_id": subject, "field": "email", "plaintext": "p@example.cn"},
        headers=app_key,
    ).get_json()["token"]
    raw = tokens.from_text(sealed)
    cut = tokens.to_text(raw[: tokens.parse_header(raw).length + 5])
    decrypt = {
        "subject_id": subject,
        "field": "email",
        "token": cut,
        "purpose": "essential.service",
        "justification": "order 5512",
    }
    assert_problem(client.post("/v1/crypto/decrypt", json=decrypt, headers=app_key), 422, "undecryptable")
