"""Root key (KEK) providers: where the key that wraps every stored key comes from.

The service never stores a root key. A provider wraps and unwraps the tenant keys; everything below them (the
per-subject data keys) is wrapped by a tenant key. To use an external KMS or Vault Transit, implement
``KeyProvider`` with its encrypt/decrypt calls (Vault: ``POST /v1/transit/encrypt/<name>`` with ``context``
as the associated data, ``POST /v1/transit/keys/<name>/rotate`` for a new version; AWS KMS: ``Encrypt``/``Decrypt``
with an ``EncryptionContext``) and return the KMS key version as ``version``.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from govsvc.config import ConfigError
from govsvc.crypto.kdf import derive_key

_NONCE = 12


class KeyConfigurationError(ConfigError):
    """The root keyring is missing or malformed."""


class KeyUnwrapError(ValueError):
    """A wrapped key does not open under the root key version it names (wrong key, or altered)."""


class KeyProvider(Protocol):
    """Wraps keys under a root key that the service never sees stored."""

    name: str

    @property
    def current_version(self) -> int:
        """The version new wraps use; older versions stay available for unwrapping until retired."""
        ...

    @property
    def versions(self) -> tuple[int, ...]: ...

    def wrap(self, key: bytes, context: str) -> tuple[int, bytes]:
        """(root version used, wrapped key); ``context`` is bound as associated data."""
        ...

    def unwrap(self, version: int, wrapped: bytes, context: str) -> bytes: ...


class LocalKeyProvider:
    """Root keys held by this process: from ``GOVSVC_ROOT_KEYS`` or a key file (``<version>:<base64 32 bytes>`` per
    line; the highest version wraps). Outside production, with neither set, version 1 is derived from the secret
    key so that `make run` works out of the box."""

    name = "local"

    def __init__(self, keys: dict[int, bytes]) -> None:
        if not keys:
            raise KeyConfigurationError("the root keyring is empty")
        for version, key in keys.items():
            if version < 1 or len(key) != 32:
                raise KeyConfigurationError(f"root key version {version} must be >= 1 and 32 bytes long")
        self._aeads = {version: AESGCM(key) for version, key in keys.items()}

    @classmethod
    def parse(cls, text: str) -> LocalKeyProvider:
        """``1:<base64>`` entries separated by newlines or commas."""
        keys: dict[int, bytes] = {}
        for number, entry in enumerate(text.replace(",", "\n").splitlines(), start=1):
            entry = entry.strip()
            if not entry or entry.startswith("#"):
                continue
            version, _, encoded = entry.partition(":")
            try:
                keys[int(version)] = base64.b64decode(encoded, validate=True)
            except (ValueError, binascii.Error):
                raise KeyConfigurationError(f"root keyring entry {number} is not <version>:<base64 key>") from None
        return cls(keys)

    @classmethod
    def from_settings(
        cls, *, root_keys: str, root_key_file: str, secret_key: str, production: bool
    ) -> LocalKeyProvider:
        if root_keys:
            return cls.parse(root_keys)
        if root_key_file:
            path = Path(root_key_file)
            if not path.is_file():
                raise KeyConfigurationError(f"the root key file {path} does not exist")
            return cls.parse(path.read_text())
        if production:
            raise KeyConfigurationError("production needs GOVSVC_ROOT_KEYS or GOVSVC_ROOT_KEY_FILE")
        return cls({1: derive_key(secret_key, "govsvc development root key v1")})

    @property
    def current_version(self) -> int:
        return max(self._aeads)

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._aeads))

    def wrap(self, key: bytes, context: str) -> tuple[int, bytes]:
        version = self.current_version
        nonce = os.urandom(_NONCE)
        return version, nonce + self._aeads[version].encrypt(nonce, key, context.encode())

    def unwrap(self, version: int, wrapped: bytes, context: str) -> bytes:
        aead = self._aeads.get(version)
        if aead is None:
            raise KeyUnwrapError(f"root key version {version} is not in the keyring")
        try:
            return aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], context.encode())
        except InvalidTag:
            raise KeyUnwrapError(f"the key does not unwrap under root key version {version}") from None


def new_root_key_line(version: int) -> str:
    """A keyring line with a fresh random root key (for ``govsvc crypto new-root-key``)."""
    return f"{version}:{base64.b64encode(os.urandom(32)).decode()}"
