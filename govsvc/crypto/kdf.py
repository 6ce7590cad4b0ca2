"""Keys derived from the service secret: one HKDF-SHA256 label per use, so the secret itself keys nothing."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(secret_key: str, label: str) -> bytes:
    """A 256-bit key for one purpose (``label``), derived from the service secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(secret_key.encode())
