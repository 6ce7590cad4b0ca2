"""Checkpoint signing keys: Ed25519, generated at init, rotatable, old public keys kept published.

The private key is stored in the database wrapped with AES-256-GCM under a key derived (HKDF-SHA256) from
``GOVSVC_SECRET_KEY``, so every instance sharing the database can sign and a database dump alone reveals nothing.
Changing the secret key therefore requires rotating the signing key first (the old one cannot be unwrapped).
"""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit.note import Signer, generate_signer, parse_skey, parse_vkey
from govsvc.audit.models import AuditSigningKey
from govsvc.audit.service import AuditContext, record
from govsvc.core.db import utcnow
from govsvc.crypto.service import DecryptionFailed, KeyWrapper

_WRAP_LABEL = "govsvc audit signing key wrap v1"


class SigningKeyUnavailable(RuntimeError):
    """No usable signing key (none created, or it cannot be unwrapped with this secret key)."""


def wrap_private_key(skey: str, secret_key: str, vkey: str) -> bytes:
    return KeyWrapper(secret_key, _WRAP_LABEL).wrap(skey, vkey)


def unwrap_private_key(wrapped: bytes, secret_key: str, vkey: str) -> str:
    try:
        return KeyWrapper(secret_key, _WRAP_LABEL).unwrap(wrapped, vkey)
    except DecryptionFailed:
        raise SigningKeyUnavailable(
            "the audit signing key cannot be unwrapped: was GOVSVC_SECRET_KEY changed? rotate the key first"
        ) from None


def active_key(session: Session) -> AuditSigningKey | None:
    """The key that signs new checkpoints (the newest one not retired)."""
    return session.scalar(
        select(AuditSigningKey).where(AuditSigningKey.retired_at.is_(None)).order_by(AuditSigningKey.pk.desc())
    )


def create_key(session: Session, secret_key: str, origin: str) -> AuditSigningKey:
    """Generate a new signing key named after the log's origin and make it the active one."""
    skey, vkey = generate_signer(origin)
    key = AuditSigningKey(
        key_name=origin, vkey=vkey, wrapped_private_key=wrap_private_key(skey, secret_key, vkey), created_at=utcnow()
    )
    session.add(key)
    session.flush()
    return key


def ensure_key(session: Session, secret_key: str, origin: str) -> AuditSigningKey:
    """The active key, created at first use (``govsvc init`` calls this)."""
    return active_key(session) or create_key(session, secret_key, origin)


def rotate_key(
    session: Session, secret_key: str, origin: str, *, context: AuditContext | None = None
) -> AuditSigningKey:
    """Retire the active key (its public key stays published), create a new one, and audit the rotation."""
    old = active_key(session)
    if old is not None:
        old.retired_at = utcnow()
    new = create_key(session, secret_key, origin)
    record(
        session,
        "key.rotated",
        object_ref=f"audit-signing-key:kid{key_id_hex(new.vkey)}",
        details={"retired": f"kid{key_id_hex(old.vkey)}" if old else None},
        context=context,
    )
    return new


def published_keys(session: Session) -> list[AuditSigningKey]:
    """Every key that ever signed, oldest first: verifiers need the retired ones for old checkpoints."""
    return list(session.scalars(select(AuditSigningKey).order_by(AuditSigningKey.pk)))


def key_id_hex(vkey: str) -> str:
    return f"{parse_vkey(vkey).key_id:08x}"


class SignerCache:
    """Unwraps the active signer once per key, thread-safely."""

    def __init__(self, secret_key: str) -> None:
        self._secret_key = secret_key
        self._lock = threading.Lock()
        self._cached: tuple[int, Signer] | None = None

    def signer(self, session: Session) -> Signer:
        key = active_key(session)
        if key is None:
            raise SigningKeyUnavailable("no audit signing key: run `govsvc init` (or `govsvc audit rotate-key`)")
        with self._lock:
            if self._cached is None or self._cached[0] != key.pk:
                skey = unwrap_private_key(key.wrapped_private_key, self._secret_key, key.vkey)
                self._cached = (key.pk, parse_skey(skey))
            return self._cached[1]
