"""Keyed blind indexes and authenticated encryption of identifier values.

Keys are derived (HKDF-SHA256) from ``GOVSVC_SECRET_KEY`` with a distinct label per use, so the secret itself never
encrypts or indexes anything. The field-encryption issue replaces this derivation with wrapped per-tenant and
per-subject data keys; the functions here keep their signatures.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12
_FORMAT_V1 = b"\x01"


class DecryptionFailed(ValueError):
    """A ciphertext was altered, moved to another record, or encrypted under another key."""


def derive_key(secret_key: str, label: str) -> bytes:
    """A 256-bit key for one purpose (``label``), derived from the service secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(secret_key.encode())


class KeyWrapper:
    """Wraps private keys for storage: AES-256-GCM under a key derived from the service secret and a label."""

    def __init__(self, secret_key: str, label: str) -> None:
        self._aead = AESGCM(derive_key(secret_key, label))

    def wrap(self, secret: str, associated: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, secret.encode(), associated.encode())

    def unwrap(self, wrapped: bytes, associated: str) -> str:
        """The secret; DecryptionFailed when the secret key changed or the record was altered."""
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], associated.encode()).decode()
        except InvalidTag:
            raise DecryptionFailed("the wrapped key cannot be unwrapped with this secret key") from None


class FieldKeys:
    """The blind-index and encryption keys of identifier values."""

    def __init__(self, secret_key: str) -> None:
        self._index_key = derive_key(secret_key, "govsvc blind index v1")
        self._aead = AESGCM(derive_key(secret_key, "govsvc identifier encryption v1"))

    def blind_index(self, *parts: str) -> str:
        """HMAC-SHA256 over the parts (e.g. kind, system, normalised value): equality search without plaintext."""
        return hmac.new(self._index_key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()

    def encrypt(self, plaintext: str, associated: str) -> bytes:
        """AES-256-GCM; ``associated`` binds the ciphertext to its record and field."""
        nonce = os.urandom(_NONCE)
        return _FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext.encode(), associated.encode())

    def decrypt(self, token: bytes, associated: str) -> str:
        if token[:1] != _FORMAT_V1:
            raise DecryptionFailed("unknown ciphertext format")
        try:
            return self._aead.decrypt(token[1 : 1 + _NONCE], token[1 + _NONCE :], associated.encode()).decode()
        except InvalidTag:
            raise DecryptionFailed("the ciphertext does not belong to this record or key") from None
