"""Hypothesis properties of the token format. (The Merkle proofs' properties are in
tests/audit_verifier/test_audit_merkle_properties.py, the consent projection's in tests/test_consent.py.)"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govsvc.crypto import tokens
from govsvc.crypto.tokens import Ciphers, TokenError
from tests.support.asserts import assert_problem

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
