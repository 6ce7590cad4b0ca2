"""Keys derived from the service secret (HKDF-SHA256, one label per use), and the keys of subjects' identifying
values: blind indexes, and sealing under each subject's data key (``govsvc.crypto.keys``)."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import Session

from govsvc.crypto import tokens
from govsvc.crypto.kdf import derive_key
from govsvc.crypto.keys import KeyStore, subject_key_id

__all__ = ["DecryptionFailed", "FieldKeys", "KeyWrapper", "derive_key"]

_NONCE = 12
_FORMAT_V1 = b"\x01"


class DecryptionFailed(ValueError):
    """A ciphertext was altered, moved to another record, or encrypted under another key."""


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
    """Keys of a subject's identifying values: keyed blind indexes (equality search without plaintext), and the
    values themselves sealed under the subject's data key, so that crypto-shredding reaches them too."""

    def __init__(self, secret_key: str, store: KeyStore) -> None:
        # keyed once: each index copies this HMAC state instead of keying a new one (OpenSSL 3's one-shot HMAC
        # looks up its algorithm on every call, under a lock the request threads share)
        self._index_mac = hmac.new(derive_key(secret_key, "govsvc blind index v1"), digestmod=hashlib.sha256)
        self._legacy = AESGCM(derive_key(secret_key, "govsvc identifier encryption v1"))
        self.store = store

    def blind_index(self, *parts: str) -> str:
        """HMAC-SHA256 over the parts (e.g. kind, system, normalised value): equality search without plaintext."""
        mac = self._index_mac.copy()
        mac.update("\x1f".join(parts).encode())
        return mac.hexdigest()

    def seal(self, session: Session, subject_id: str, name: str, plaintext: str) -> bytes:
        """``plaintext`` sealed under the subject's data key, bound to the subject and ``name``."""
        return self.store.seal(session, subject_id, name, plaintext)

    def open(self, session: Session, subject_id: str, name: str, token: bytes) -> str:
        return self.store.open(session, subject_id, name, token)

    def is_sealed_for(self, subject_id: str, token: bytes) -> bool:
        """Whether ``token`` is a data-key token of this subject (not a value of the earlier, derived-key format)."""
        try:
            return tokens.parse_header(token).key_id == subject_key_id(subject_id)
        except tokens.TokenError:
            return False

    def open_legacy(self, token: bytes, associated: str) -> str:
        """A value sealed before data keys existed (format byte, nonce, ciphertext under a key derived from the
        secret key): read once by ``govsvc init`` to re-seal it under the subject's data key."""
        if token[:1] != _FORMAT_V1:
            raise DecryptionFailed("unknown ciphertext format")
        try:
            return self._legacy.decrypt(token[1 : 1 + _NONCE], token[1 + _NONCE :], associated.encode()).decode()
        except InvalidTag:
            raise DecryptionFailed("the ciphertext does not belong to this record or key") from None
