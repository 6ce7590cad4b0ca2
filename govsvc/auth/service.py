"""Credentials: API keys for apps and argon2id passwords for admin users.

An API key looks like ``gsk_<8-char prefix>_<43 alphanumeric chars>`` (256 random bits). The key is shown once; the
database keeps its prefix (to find and identify it) and its SHA-256 hash, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass, replace
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from govsvc.audit.service import AuditContext, record
from govsvc.auth.models import AdminUser, ApiClient
from govsvc.core.db import utcnow
from govsvc.core.errors import AuthenticationFailed, ConflictError, NotFoundError, ValidationFailed
from govsvc.policy.models import PolicyState

KEY_PREFIX_TAG = "gsk"
KEY_SECRET_LENGTH = 43  # 62**43 > 2**256
MIN_PASSWORD_LENGTH = 12
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits
_KEY_RE = re.compile(r"^(gsk_[a-z2-7]{8})_([A-Za-z0-9]{43})$")
_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,79}$")
_password_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) defaults
# Compared against when a username or key prefix is unknown, so timing does not reveal which exist.
_DUMMY_PASSWORD_HASH = _password_hasher.hash(secrets.token_hex(16))
_DUMMY_KEY_HASH = hashlib.sha256(b"govsvc-dummy-key").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API client or an admin user, with the role the RBAC policy knows."""

    principal_id: str
    kind: str  # "client" | "admin"
    role: str
    name: str
    client_id: str | None = None
    policy_version: int | None = None  # the RBAC policy version read with the credential
    expires_at: datetime | None = None  # of a client's key
    confirmed: bool = True  # False: recalled from KnownKeys; the revocation check is still due


class KnownKeys:
    """API keys this process has verified against the database, by their SHA-256, for views that confirm the
    credential in their own first query (see ``govsvc.core.access.confirms_credential``).

    Only what never changes about a key is kept: its client, role and expiry. Whether it is revoked is always read
    from the database. Bounded: emptied when full.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._principals: dict[str, Principal] = {}

    def remember(self, api_key: str, principal: Principal) -> None:
        if len(self._principals) >= self._limit:
            self._principals.clear()
        self._principals[hash_api_key(api_key)] = replace(principal, policy_version=None, confirmed=False)

    def recall(self, api_key: str, *, now: datetime | None = None) -> Principal | None:
        """The principal of a key verified before and not expired since, or None (then authenticate fully)."""
        principal = self._principals.get(hash_api_key(api_key))
        if principal is None or (principal.expires_at is not None and principal.expires_at <= (now or utcnow())):
            return None
        return principal


@dataclass(frozen=True)
class IssuedKey:
    """A newly created client and its key: the only moment the key exists outside the caller."""

    client: ApiClient
    api_key: str


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def generate_api_key() -> tuple[str, str]:
    """A new random key and its identifying prefix."""
    prefix = KEY_PREFIX_TAG + "_" + "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(KEY_SECRET_LENGTH))
    return f"{prefix}_{secret}", prefix


def _new_client_id() -> str:
    # base32 letters and 2-7: never a long run of digits, so no id can be mistaken for a phone number
    return "cl_" + "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(16))


def create_client(
    session: Session,
    *,
    name: str,
    role: str,
    known_roles: frozenset[str] | set[str],
    expires_at: datetime | None = None,
    created_by: str | None = None,
) -> IssuedKey:
    """Create an API client with a role from the policy; returns the key, which is not stored."""
    name = name.strip()
    errors = []
    if not name or len(name) > 200:
        errors.append({"field": "name", "message": "must be 1-200 characters"})
    if role not in known_roles:
        errors.append({"field": "role", "message": f"unknown role; known roles: {', '.join(sorted(known_roles))}"})
    if expires_at is not None and expires_at <= utcnow():
        errors.append({"field": "expires_at", "message": "must be in the future"})
    if errors:
        raise ValidationFailed("The client cannot be created.", errors=errors)
    api_key, prefix = generate_api_key()
    client = ApiClient(
        client_id=_new_client_id(),
        name=name,
        role=role,
        key_prefix=prefix,
        key_hash=hash_api_key(api_key),
        created_at=utcnow(),
        created_by=created_by,
        expires_at=expires_at,
    )
    session.add(client)
    session.flush()
    return IssuedKey(client=client, api_key=api_key)


_clients = ApiClient.__table__.c
# Built once: authentication runs on every request, so it skips the ORM and reuses the compiled statement.
# The RBAC policy version rides along, so a request needs one round trip to authenticate and to know whether its
# policy cache is current.
_POLICY_VERSION = select(PolicyState.__table__.c.version).where(PolicyState.__table__.c.id == 1).scalar_subquery()
_CLIENT_BY_PREFIX = select(
    _clients.client_id,
    _clients.name,
    _clients.role,
    _clients.key_hash,
    _clients.expires_at,
    _clients.revoked_at,
    _POLICY_VERSION.label("policy_version"),
).where(_clients.key_prefix == bindparam("prefix"))


def authenticate_api_key(session: Session, api_key: str, *, now: datetime | None = None) -> Principal:
    """The principal of a bearer key, or AuthenticationFailed (unknown, revoked or expired key)."""
    match = _KEY_RE.match(api_key)
    client = None
    if match:
        client = session.connection().execute(_CLIENT_BY_PREFIX, {"prefix": match.group(1)}).first()
    expected = client.key_hash if client is not None else _DUMMY_KEY_HASH
    if not hmac.compare_digest(expected, hash_api_key(api_key)) or client is None:
        raise AuthenticationFailed("The API key is not valid.")
    now = now or utcnow()
    if client.revoked_at is not None:
        raise AuthenticationFailed("The API key has been revoked.")
    if client.expires_at is not None and client.expires_at <= now:
        raise AuthenticationFailed("The API key has expired.")
    return Principal(
        principal_id=f"client:{client.client_id}",
        kind="client",
        role=client.role,
        name=client.name,
        client_id=client.client_id,
        policy_version=client.policy_version,
        expires_at=client.expires_at,
    )


def client_status(client: ApiClient, now: datetime | None = None) -> str:
    """``active``, ``expired`` or ``revoked``."""
    if client.revoked_at is not None:
        return "revoked"
    if client.expires_at is not None and client.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def get_client(session: Session, client_id: str) -> ApiClient:
    client = session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    if client is None:
        raise NotFoundError(f"No API client has the id {client_id!r}.")
    return client


def list_clients(
    session: Session, *, after_pk: int | None, limit: int, include_revoked: bool = True
) -> list[ApiClient]:
    """Clients in creation order, ``limit + 1`` at most so the caller can tell whether a next page exists."""
    query = select(ApiClient).order_by(ApiClient.pk).limit(limit + 1)
    if after_pk is not None:
        query = query.where(ApiClient.pk > after_pk)
    if not include_revoked:
        query = query.where(ApiClient.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_client(session: Session, client_id: str) -> ApiClient:
    """Revoke a client's key at once; revoking twice is a conflict."""
    client = get_client(session, client_id)
    if client.revoked_at is not None:
        raise ConflictError(f"The API client {client_id!r} is already revoked.")
    client.revoked_at = utcnow()
    session.flush()
    return client


def record_client_created(session: Session, client: ApiClient, *, context: AuditContext | None = None) -> None:
    """Audit a new client (``credential.created``): its role and key prefix, never the key."""
    record(
        session,
        "credential.created",
        object_ref=f"client:{client.client_id}",
        details={"role": client.role, "key_prefix": client.key_prefix},
        context=context,
    )


def record_client_revoked(session: Session, client: ApiClient, *, context: AuditContext | None = None) -> None:
    """Audit a revocation (``credential.revoked``)."""
    record(session, "credential.revoked", object_ref=f"client:{client.client_id}", context=context)


def validate_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            "The password is too short.",
            errors=[{"field": "password", "message": f"must be at least {MIN_PASSWORD_LENGTH} characters"}],
        )


def create_admin_user(
    session: Session, *, username: str, password: str, role: str, known_roles: frozenset[str] | set[str]
) -> AdminUser:
    """Create an admin user; the password is stored as an argon2id hash only."""
    username = username.strip().lower()
    if not _USERNAME_RE.match(username):
        raise ValidationFailed(
            "Invalid username.",
            errors=[{"field": "username", "message": "2-80 characters: a-z, 0-9, '.', '_', '-'"}],
        )
    if role not in known_roles:
        raise ValidationFailed(
            "Unknown role.",
            errors=[{"field": "role", "message": f"known roles: {', '.join(sorted(known_roles))}"}],
        )
    validate_password(password)
    if session.scalar(select(AdminUser.pk).where(AdminUser.username == username)) is not None:
        raise ConflictError(f"The admin user {username!r} exists already.")
    user = AdminUser(username=username, role=role, password_hash=_password_hasher.hash(password), created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def authenticate_admin(session: Session, username: str, password: str) -> Principal:
    """Check an admin's password (argon2id, constant work whether or not the user exists)."""
    user = session.scalar(select(AdminUser).where(AdminUser.username == username.strip().lower()))
    stored = user.password_hash if user is not None else _DUMMY_PASSWORD_HASH
    try:
        _password_hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        raise AuthenticationFailed("Invalid username or password.") from None
    if user is None or user.disabled_at is not None:
        raise AuthenticationFailed("Invalid username or password.")
    if _password_hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _password_hasher.hash(password)
    return Principal(principal_id=f"admin:{user.username}", kind="admin", role=user.role, name=user.username)
