"""The ciphertext token: a versioned, self-describing byte string.

Layout: ``format (1) | key id length (1) | key id (ASCII) | key version (4, big-endian) | body``, where the body is
``nonce (12) | ciphertext | tag (16)`` for format 1 (AES-256-GCM, random nonce) and ``SIV (16) | ciphertext`` for
format 2 (AES-SIV, deterministic). The associated data is the header followed by the context (tenant, subject,
field), so a token moved to another record or field, or relabelled with another key version, fails to open.
Text form (API): ``gv1.`` + base64url without padding.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_GCM = 1
FORMAT_SIV = 2
_NONCE = 12
_TAG = 16
TEXT_PREFIX = "gv1."
_ASSOCIATED_CACHE = 256  # associated-data byte strings kept per key (one per field of its subject)
_urandom = os.urandom


class TokenError(ValueError):
    """Not a token, or one that does not open: altered, moved, or under another key."""


class TokenHeader(NamedTuple):
    format: int
    key_id: str
    key_version: int
    length: int  # bytes of header


def context(tenant: str, subject_id: str, field: str) -> bytes:
    """What a ciphertext belongs to, bound as associated data."""
    return "\x1f".join((tenant, subject_id, field)).encode()


def header(format_: int, key_id: str, key_version: int) -> bytes:
    encoded = key_id.encode("ascii")
    if len(encoded) > 255:
        raise ValueError("key id longer than 255 bytes")
    return bytes((format_, len(encoded))) + encoded + struct.pack(">I", key_version)


def parse_header(token: bytes) -> TokenHeader:
    if len(token) < 6 or token[0] not in (FORMAT_GCM, FORMAT_SIV):
        raise TokenError("not a govsvc ciphertext token (unknown format)")
    end = 2 + token[1]
    if len(token) < end + 4 + 16:
        raise TokenError("the token is truncated")
    try:
        key_id = token[2:end].decode("ascii")
    except UnicodeDecodeError:
        raise TokenError("the token's key id is not ASCII") from None
    return TokenHeader(token[0], key_id, int.from_bytes(token[end : end + 4], "big"), end + 4)


@dataclass(frozen=True, slots=True)
class Ciphers:
    """One data key, ready to use: AES-256-GCM, and AES-SIV under a 512-bit key derived from it."""

    key_id: str
    version: int
    gcm: AESGCM
    siv: AESSIV
    gcm_header: bytes = b""  # the token headers of this key, built once
    siv_header: bytes = b""
    subject_id: str | None = None  # the subject of a data key (``subject:<id>``), None for other keys
    # field -> (tenant, subject, the GCM associated data: header, 0x00, context), built once per field, bounded
    _associated: dict[str, tuple[str, str, bytes]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gcm_header", header(FORMAT_GCM, self.key_id, self.version))
        object.__setattr__(self, "siv_header", header(FORMAT_SIV, self.key_id, self.version))
        kind, _, owner = self.key_id.partition(":")
        object.__setattr__(self, "subject_id", owner if kind == "subject" else None)

    @classmethod
    def of(cls, key_id: str, version: int, key: bytes) -> Ciphers:
        siv_key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"govsvc aes-siv v1").derive(key)
        return cls(key_id, version, AESGCM(key), AESSIV(siv_key))

    def gcm_associated(self, tenant: str, subject_id: str, field_name: str) -> bytes:
        """The associated data of a format-1 token of this key bound to (tenant, subject, field), built once."""
        cached = self._associated.get(field_name)
        if cached is not None and cached[1] == subject_id and cached[0] == tenant:
            return cached[2]
        associated = self.gcm_header + b"\x00" + context(tenant, subject_id, field_name)
        if len(self._associated) >= _ASSOCIATED_CACHE:
            self._associated.clear()
        self._associated[field_name] = (tenant, subject_id, associated)
        return associated


def gcm_encrypt(gcm: AESGCM, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM with a 96-bit nonce and a 128-bit tag: ciphertext || tag."""
    return gcm.encrypt(nonce, plaintext, associated)


def gcm_decrypt(gcm: AESGCM, nonce: bytes, sealed: bytes, associated: bytes) -> bytes:
    try:
        return gcm.decrypt(nonce, sealed, associated)
    except InvalidTag:
        raise TokenError(_DOES_NOT_OPEN) from None


def siv_encrypt(siv: AESSIV, plaintext: bytes, associated: list[bytes]) -> bytes:
    """AES-SIV (RFC 5297): SIV || ciphertext; deterministic."""
    return siv.encrypt(plaintext, associated)


def siv_decrypt(siv: AESSIV, sealed: bytes, associated: list[bytes]) -> bytes:
    try:
        return siv.decrypt(sealed, associated)
    except InvalidTag:
        raise TokenError(_DOES_NOT_OPEN) from None


_DOES_NOT_OPEN = "the ciphertext does not open here: altered, moved to another record or field, or under another key"


def seal(ciphers: Ciphers, plaintext: bytes, bound_to: bytes, *, deterministic: bool = False) -> bytes:
    """Encrypt ``plaintext`` (AES-256-GCM with a random nonce, or AES-SIV: equal plaintexts, equal tokens)."""
    if deterministic:
        head = ciphers.siv_header
        return head + siv_encrypt(ciphers.siv, plaintext, [head + b"\x00" + bound_to])
    return seal_gcm(ciphers, plaintext, ciphers.gcm_header + b"\x00" + bound_to)


def seal_gcm(ciphers: Ciphers, plaintext: bytes, associated: bytes) -> bytes:
    """A format-1 token: AES-256-GCM under a fresh random 96-bit nonce. ``associated`` is the key's GCM header,
    0x00 and the context (``Ciphers.gcm_associated``)."""
    nonce = _urandom(_NONCE)
    return b"".join((ciphers.gcm_header, nonce, ciphers.gcm.encrypt(nonce, plaintext, associated)))


def open_gcm(ciphers: Ciphers, token: bytes, associated: bytes) -> bytes:
    """The plaintext of a format-1 token that starts with ``ciphers.gcm_header``; ``associated`` as in
    ``seal_gcm``. TokenError when it was altered, moved, or is truncated."""
    length = len(ciphers.gcm_header)
    if len(token) < length + _NONCE + _TAG:
        raise TokenError("the token is truncated")
    try:
        return ciphers.gcm.decrypt(token[length : length + _NONCE], token[length + _NONCE :], associated)
    except InvalidTag:
        raise TokenError(_DOES_NOT_OPEN) from None


def open_sealed(ciphers: Ciphers, token: bytes, bound_to: bytes, parsed: TokenHeader | None = None) -> bytes:
    """The plaintext; TokenError when the token was altered, moved, or sealed under another key."""
    if parsed is None and token.startswith(ciphers.gcm_header):  # the usual case: nothing to parse
        return open_gcm(ciphers, token, ciphers.gcm_header + b"\x00" + bound_to)
    if parsed is None and token.startswith(ciphers.siv_header):
        length, format_ = len(ciphers.siv_header), FORMAT_SIV
    else:
        parsed = parsed or parse_header(token)
        if parsed.key_id != ciphers.key_id or parsed.key_version != ciphers.version:
            raise TokenError("the token was sealed under another key")
        length, format_ = parsed.length, parsed.format
    if len(token) < length + (0 if format_ == FORMAT_SIV else _NONCE) + _TAG:  # a 128-bit tag at least
        raise TokenError("the token is truncated")
    associated = token[:length] + b"\x00" + bound_to
    if format_ == FORMAT_SIV:
        return siv_decrypt(ciphers.siv, token[length:], [associated])
    return gcm_decrypt(ciphers.gcm, token[length : length + _NONCE], token[length + _NONCE :], associated)


def to_text(token: bytes) -> str:
    return TEXT_PREFIX + base64.urlsafe_b64encode(token).rstrip(b"=").decode()


def from_text(text: str) -> bytes:
    if not text.startswith(TEXT_PREFIX):
        raise TokenError(f"a token starts with {TEXT_PREFIX!r}")
    body = text[len(TEXT_PREFIX) :]
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, binascii.Error):
        raise TokenError("the token is not base64url") from None
