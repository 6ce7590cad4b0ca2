"""Signing in to the admin UI (no Flask here): sessions, rate limiting and lockout, CSRF tokens, preferences.

A browser session is a random 256-bit token in a cookie; the database keeps its SHA-256 only, with the user, the
last activity and an absolute expiry. Every request re-reads the user, so disabling an admin user or changing
their role applies to their next request. Sign-in attempts are counted per username and per address (both as
keyed hashes): too many failures for a username lock it for a while, too many from an address are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from govsvc.admin.models import AdminLoginAttempt, AdminPreference, AdminSession
from govsvc.audit.service import current_context, record
from govsvc.auth.models import AdminUser
from govsvc.auth.service import Principal, authenticate_admin
from govsvc.config import Settings
from govsvc.core.db import Database, utcnow
from govsvc.core.errors import AuthenticationFailed, ServiceError, ValidationFailed
from govsvc.core.pii_guard import pii_kind
from govsvc.crypto.kdf import derive_key

LANGUAGES = ("en", "zh")  # English and Simplified Chinese
DEFAULT_TIME_ZONE = "UTC"
TOUCH_EVERY = timedelta(seconds=60)  # how stale last_seen_at may get before a request refreshes it
KEEP_ATTEMPTS = timedelta(days=1)
MAX_USERNAME = 80
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class SignInPolicy:
    """How long sessions last and how sign-in failures are limited (``GOVSVC_ADMIN_*``)."""

    idle: timedelta
    lifetime: timedelta
    max_failures: int
    lockout: timedelta
    ip_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInPolicy:
        return cls(
            idle=timedelta(minutes=settings.admin_session_idle_minutes),
            lifetime=timedelta(hours=settings.admin_session_max_hours),
            max_failures=settings.admin_login_max_failures,
            lockout=timedelta(minutes=settings.admin_lockout_minutes),
            ip_attempts=settings.admin_login_ip_attempts,
        )


class SignInRefused(ServiceError):
    """A sign-in that did not succeed; ``reason`` is invalid_credentials, locked_out, rate_limited or no_role."""

    slug = "invalid-credentials"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason


@dataclass(frozen=True)
class SignedIn:
    token: str  # goes in the cookie; never stored
    principal: Principal


@dataclass(frozen=True)
class Preferences:
    language: str | None  # None: not chosen yet (the browser's language applies)
    time_zone: str


@dataclass(frozen=True)
class ActiveSession:
    """A signed-in session as a request sees it."""

    pk: int
    token_hash: str
    principal: Principal
    preferences: Preferences
    last_seen_at: datetime
    expires_at: datetime


class AdminKeys:
    """Keys derived from the service secret: CSRF tokens and the hashes of typed usernames."""

    def __init__(self, secret_key: str) -> None:
        self._csrf = derive_key(secret_key, "govsvc admin csrf v1")
        self._username = derive_key(secret_key, "govsvc admin username hash v1")

    def csrf_token(self, binding: str) -> str:
        """The CSRF token of a session (or of a sign-in form): an HMAC of what it is bound to."""
        digest = hmac.new(self._csrf, binding.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def csrf_valid(self, binding: str, token: str | None) -> bool:
        """Whether a submitted token belongs to this session (constant-time comparison)."""
        return bool(token) and hmac.compare_digest(self.csrf_token(binding), str(token))

    def username_hash(self, username: str) -> str:
        return hmac.new(self._username, normalise_username(username).encode(), hashlib.sha256).hexdigest()


def normalise_username(username: str) -> str:
    return username.strip().lower()[:MAX_USERNAME]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_nonce() -> str:
    """A random value for a cookie that binds a sign-in form's CSRF token (before any session exists)."""
    return secrets.token_urlsafe(32)


def _admin_ref(username: str) -> str | None:
    """``admin:<username>`` for the audit log, unless the username could be mistaken for personal data."""
    reference = f"admin:{username}"
    return reference if pii_kind(reference) is None else None


def sign_in(
    database: Database,
    keys: AdminKeys,
    policy: SignInPolicy,
    *,
    username: str,
    password: str,
    ip_hash: str | None,
    may_use_ui: Callable[[Session, str], bool],
    now: datetime | None = None,
) -> SignedIn:
    """Check a sign-in and open a session. Every attempt is recorded and audited in its own committed
    transaction, whatever the outcome; SignInRefused says why one failed. ``may_use_ui(session, role)`` tells
    whether the policy lets the role use the admin UI."""
    with database.transaction() as session:
        outcome = _attempt(
            session, keys, policy, username, password[:MAX_PASSWORD], ip_hash, may_use_ui, now or utcnow()
        )
    if isinstance(outcome, SignInRefused):
        raise outcome
    return outcome


def _attempt(
    session: Session,
    keys: AdminKeys,
    policy: SignInPolicy,
    username: str,
    password: str,
    ip_hash: str | None,
    may_use_ui: Callable[[Session, str], bool],
    now: datetime,
) -> SignedIn | SignInRefused:
    name = normalise_username(username)
    name_hash = keys.username_hash(name)
    since = now - policy.lockout
    _prune(session, now)
    known = session.scalar(select(AdminUser.pk).where(AdminUser.username == name)) is not None
    reference = _admin_ref(name) if known else None

    def refuse(reason: str, detail: str, *, counted: bool) -> SignInRefused:
        session.add(
            AdminLoginAttempt(username_hash=name_hash, ip_hash=ip_hash, succeeded=False, counted=counted, at=now)
        )
        record(
            session,
            "admin.sign_in_failed",
            outcome="denied" if reason == "no_role" else "failure",
            object_ref=reference,
            reason_code=reason,
        )
        return SignInRefused(reason, detail)

    if ip_hash is not None and _failures(session, AdminLoginAttempt.ip_hash == ip_hash, since) >= policy.ip_attempts:
        return refuse("rate_limited", "Too many failed sign-ins from this address; try again later.", counted=False)
    last_success = session.scalar(
        select(func.max(AdminLoginAttempt.at)).where(
            AdminLoginAttempt.username_hash == name_hash, AdminLoginAttempt.succeeded.is_(True)
        )
    )
    window_start = max(since, last_success) if last_success is not None else since
    failures = _failures(session, AdminLoginAttempt.username_hash == name_hash, window_start)
    if failures >= policy.max_failures:
        return refuse("locked_out", "This account is locked after repeated failed sign-ins.", counted=False)
    try:
        principal = authenticate_admin(session, name, password)
    except AuthenticationFailed:
        refused = refuse("invalid_credentials", "Invalid username or password.", counted=True)
        if failures + 1 >= policy.max_failures and reference is not None:
            record(
                session, "admin.locked_out", outcome="failure", object_ref=reference, reason_code="too_many_failures"
            )
        return refused
    if not may_use_ui(session, principal.role):
        return refuse("no_role", "This account's role may not use the admin UI.", counted=False)
    token = secrets.token_urlsafe(32)
    session.add(
        AdminSession(
            token_hash=hash_token(token),
            username=name,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.lifetime,
        )
    )
    session.add(AdminLoginAttempt(username_hash=name_hash, ip_hash=ip_hash, succeeded=True, counted=True, at=now))
    record(
        session,
        "admin.signed_in",
        object_ref=_admin_ref(name),
        context=replace(current_context(), principal_id=principal.principal_id, role=principal.role),
    )
    return SignedIn(token, principal)


def _failures(session: Session, condition: object, since: datetime) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                condition,  # type: ignore[arg-type]
                AdminLoginAttempt.succeeded.is_(False),
                AdminLoginAttempt.counted.is_(True),
                AdminLoginAttempt.at >= since,
            )
        )
        or 0
    )


def _prune(session: Session, now: datetime) -> None:
    """Forget attempts and dead sessions older than a day (they no longer count for anything)."""
    session.execute(delete(AdminLoginAttempt).where(AdminLoginAttempt.at < now - KEEP_ATTEMPTS))
    session.execute(
        delete(AdminSession).where(
            or_(AdminSession.expires_at < now - KEEP_ATTEMPTS, AdminSession.ended_at < now - KEEP_ATTEMPTS)
        )
    )


def resume(session: Session, policy: SignInPolicy, token: str, *, now: datetime | None = None) -> ActiveSession | None:
    """The session a cookie's token opens, or None: unknown, signed out, idle or past its lifetime, or its user
    disabled or deleted."""
    now = now or utcnow()
    row = session.execute(
        select(AdminSession, AdminUser, AdminPreference)
        .join(AdminUser, AdminUser.username == AdminSession.username)
        .outerjoin(AdminPreference, AdminPreference.username == AdminSession.username)
        .where(AdminSession.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    admin_session, user, preference = row
    if (
        admin_session.ended_at is not None
        or admin_session.expires_at <= now
        or admin_session.last_seen_at + policy.idle <= now
        or user.disabled_at is not None
    ):
        return None
    return ActiveSession(
        pk=admin_session.pk,
        token_hash=admin_session.token_hash,
        principal=Principal(principal_id=f"admin:{user.username}", kind="admin", role=user.role, name=user.username),
        preferences=Preferences(
            preference.language if preference else None, preference.time_zone if preference else DEFAULT_TIME_ZONE
        ),
        last_seen_at=admin_session.last_seen_at,
        expires_at=admin_session.expires_at,
    )


def needs_touch(active: ActiveSession, *, now: datetime | None = None) -> bool:
    """Whether the session's last activity is stale enough to record again (at most once a minute)."""
    return (now or utcnow()) - active.last_seen_at >= TOUCH_EVERY


def touch(session: Session, active: ActiveSession, *, now: datetime | None = None) -> None:
    """Record activity: the idle timeout counts from now."""
    session.execute(update(AdminSession).where(AdminSession.pk == active.pk).values(last_seen_at=now or utcnow()))


def sign_out(session: Session, active: ActiveSession, *, now: datetime | None = None) -> None:
    """End a session at once (its cookie no longer opens anything) and audit it."""
    session.execute(update(AdminSession).where(AdminSession.pk == active.pk).values(ended_at=now or utcnow()))
    record(session, "admin.signed_out", object_ref=_admin_ref(active.principal.name))


def valid_time_zone(name: str) -> bool:
    if name not in _time_zones():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


_ZONES: list[frozenset[str]] = []


def _time_zones() -> frozenset[str]:
    if not _ZONES:
        _ZONES.append(frozenset(available_timezones()))
    return _ZONES[0]


def time_zone_choices() -> list[str]:
    """Every IANA time zone name, sorted (for the preferences form)."""
    return sorted(zone for zone in _time_zones() if "/" in zone or zone == "UTC")


def save_preferences(session: Session, username: str, *, language: str, time_zone: str) -> Preferences:
    """Store a user's language and time zone; ValidationFailed names a wrong one."""
    errors = []
    if language not in LANGUAGES:
        errors.append({"field": "language", "message": f"one of {', '.join(LANGUAGES)}"})
    if not valid_time_zone(time_zone):
        errors.append({"field": "time_zone", "message": "an IANA time zone name, e.g. Asia/Shanghai"})
    if errors:
        raise ValidationFailed("The preferences are invalid.", errors=errors)
    row = session.get(AdminPreference, username)
    if row is None:
        row = AdminPreference(username=username, language=language, time_zone=time_zone)
        session.add(row)
    row.language, row.time_zone, row.updated_at = language, time_zone, utcnow()
    session.flush()
    return Preferences(language, time_zone)
