"""Route guards: every route is authenticated and checked against the RBAC policy, or explicitly public.

Declare a route's permission with ``@requires("resource", "action")``. A route that declares none is denied
(403) even to an authenticated caller, and a permission with no policy line allowing it is denied too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from flask import Flask, Response, current_app, g, request

from govsvc.audit.service import AuditContext, hash_ip, record, reset_context, set_context
from govsvc.auth.service import KnownKeys, Principal, authenticate_api_key
from govsvc.core.db import get_db, get_session
from govsvc.core.errors import AuthenticationFailed
from govsvc.core.problems import problem_response
from govsvc.core.security import FailureLimiter
from govsvc.policy.service import PolicyEngine

F = TypeVar("F", bound=Callable[..., Any])
_PERMISSION_ATTR = "_govsvc_permission"
_PUBLIC_ATTR = "_govsvc_public"
_CONFIRMS_ATTR = "_govsvc_confirms_credential"
_BROWSER_ATTR = "_govsvc_browser_session"
# the API description and static files (the service's and the admin UI's) are public
PUBLIC_ENDPOINTS = frozenset({"openapi.spec", "static", "admin.static"})
BROWSER_AUTHENTICATOR = "govsvc.browser_authenticator"  # app.extensions key of the admin UI's BrowserAuthenticator


class BrowserAuthenticator(Protocol):
    """How views marked ``browser_session`` are authenticated and refused (the admin UI provides it)."""

    def authenticate(self) -> Principal | Response:
        """The signed-in principal, or the response to send instead (sign-in redirect, CSRF refusal)."""
        ...

    def refuse(self, principal: Principal, permission: tuple[str, str] | None) -> Response:
        """The 403 page for a principal whose role lacks ``permission`` (None: the view declares none)."""
        ...


def requires(resource: str, action: str) -> Callable[[F], F]:
    """Guard a view: the caller's role must be allowed ``action`` on ``resource`` by the policy."""

    def mark(view: F) -> F:
        setattr(view, _PERMISSION_ATTR, (resource, action))
        return view

    return mark


def public(view: F) -> F:
    """Mark a view as open to unauthenticated callers (health checks, published public keys)."""
    setattr(view, _PUBLIC_ATTR, True)
    return view


def confirms_credential(view: F) -> F:
    """Mark a hot view that re-reads the caller's credential in its own first query.

    For such a view the guard recognises a key verified before in this process (``KnownKeys``) without a database
    round trip and checks the route permission against the policy it has. The view must then call
    ``check_confirmation`` with what its query read: whether the key is still unrevoked, after the policy has
    been brought up to date, and refuse the request as the guard would otherwise have done.
    """
    setattr(view, _CONFIRMS_ATTR, True)
    return view


def browser_session(view: F) -> F:
    """Mark a view as authenticated by the admin UI's signed-in session (cookie and CSRF token), not by an API
    key. Its ``@requires`` permission is checked against the same policy as every API route."""
    setattr(view, _BROWSER_ATTR, True)
    return view


@functools.lru_cache(maxsize=4096)  # per view function and attribute: read on every request
def _find_attr(view: Any, name: str) -> Any:
    while view is not None:
        if hasattr(view, name):
            return getattr(view, name)
        view = getattr(view, "__wrapped__", None)
    return None


def route_permission(view: Any) -> tuple[str, str] | None:
    """The (resource, action) a view requires, if it declares one."""
    return _find_attr(view, _PERMISSION_ATTR)


def is_public(view: Any) -> bool:
    return bool(_find_attr(view, _PUBLIC_ATTR))


def get_policy_engine() -> PolicyEngine:
    return current_app.extensions["govsvc.policy"]


def current_principal() -> Principal:
    """The authenticated caller of this request."""
    principal = g.get("principal")
    if principal is None:
        raise RuntimeError("no authenticated principal in this request")
    return principal


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _audit_context(principal: Principal | None) -> AuditContext:
    ip_hash = g.get("audit_ip_hash", _UNSET)
    if ip_hash is _UNSET:  # once per request (the anonymous context, then the caller's)
        ip_hash = g.audit_ip_hash = hash_ip(request.remote_addr, current_app.extensions["govsvc.audit_ip_key"])
    return AuditContext(
        principal_id=principal.principal_id if principal else None,
        role=principal.role if principal else None,
        client_id=principal.client_id if principal else None,
        ip_hash=ip_hash,
        request_id=g.get("request_id"),
    )


_UNSET = object()


def _record_refusal(action: str, outcome: str, reason_code: str, object_ref: str | None = None) -> None:
    """Audit a refused request in its own transaction (the request's own is rolled back first)."""
    get_session().rollback()  # release SQLite's write lock before the audit transaction takes it
    with get_db().transaction() as session:
        record(session, action, outcome=outcome, reason_code=reason_code, object_ref=object_ref)


def _reason_code(detail: str) -> str:
    for word in ("revoked", "expired"):
        if word in detail:
            return f"key_{word}"
    return "invalid_credentials"


def refuse_credentials(error: AuthenticationFailed) -> Response:
    """401 for a bad, revoked or expired key, audited as ``auth.failed``."""
    _record_refusal("auth.failed", "failure", _reason_code(error.detail))
    return problem_response(
        "invalid-credentials",
        error.detail,
        headers={"WWW-Authenticate": 'Bearer realm="govsvc", error="invalid_token"'},
    )


def refuse_permission(principal: Principal, resource: str, action: str) -> Response:
    """403 for a role the policy does not allow ``action`` on ``resource``, audited as ``access.denied``."""
    _record_refusal("access.denied", "denied", "no_role", object_ref=f"{resource}:{action}")
    return problem_response(
        "forbidden", f"The role {principal.role!r} may not {action} {resource}.", required=f"{resource}:{action}"
    )


def check_confirmation(credential_valid: bool | None, permissions: list[tuple[str, str]]) -> Response | None:
    """For a ``confirms_credential`` view, after its first query and a policy refresh: None when the caller's key
    is still valid (``credential_valid`` as read; None if not read) and its role holds every permission, else the
    refusal to return."""
    principal = current_principal()
    if credential_valid is False:
        return refuse_credentials(AuthenticationFailed("The API key has been revoked."))
    engine = get_policy_engine()
    for resource, action in permissions:
        if not engine.is_allowed(principal.role, resource, action):
            return refuse_permission(principal, resource, action)
    return None


def init_access_control(app: Flask) -> None:
    """Authenticate and authorise every request before its view runs; set who acts for the audit log."""

    @app.before_request
    def _set_anonymous_context() -> None:
        g.audit_context_token = set_context(_audit_context(None))

    @app.teardown_request
    def _reset_context(_error: BaseException | None) -> None:
        token = g.pop("audit_context_token", None)
        if token is not None:
            reset_context(token)

    @app.before_request
    def _guard() -> Response | None:
        if request.url_rule is None or request.method == "OPTIONS":
            return None  # routing will answer 404/405
        view = app.view_functions.get(request.endpoint or "")
        if request.endpoint in PUBLIC_ENDPOINTS or is_public(view):
            return None
        if _find_attr(view, _BROWSER_ATTR):
            return _guard_browser(app, view)
        if "Authorization" not in request.headers:
            return problem_response(
                "unauthenticated",
                "Send an API key as 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": 'Bearer realm="govsvc"'},
            )
        limiter: FailureLimiter = app.extensions["govsvc.auth_limiter"]
        address = request.remote_addr or "unknown"
        wait = limiter.retry_after(address)
        if wait is not None:
            return problem_response(
                "rate-limited",
                "Too many invalid API keys from this address; retry later.",
                headers={"Retry-After": str(wait)},
            )
        token = _bearer_token()
        if token is None:
            limiter.failed(address)
            return refuse_credentials(AuthenticationFailed("The Authorization header must use the Bearer scheme."))
        known_keys: KnownKeys = app.extensions["govsvc.known_keys"]
        principal = known_keys.recall(token) if _find_attr(view, _CONFIRMS_ATTR) else None
        if principal is None:
            try:
                principal = authenticate_api_key(get_session(), token)
            except AuthenticationFailed as error:
                limiter.failed(address)
                return refuse_credentials(error)
            known_keys.remember(token, principal)
        g.principal = principal
        set_context(_audit_context(principal))
        permission = route_permission(view)
        if permission is None:
            _record_refusal("access.denied", "denied", "no_route_policy", object_ref=f"route:{request.endpoint}")
            return problem_response("forbidden", "This route has no access policy; it is denied to everyone.")
        engine = get_policy_engine()
        # A key recalled from KnownKeys carries no policy version: its view's own query brings the policy up to date.
        # But when no policy is loaded yet (its first load failed, say on a database lost between the key's check
        # and the load), load it now: otherwise the deny-by-default answer would be a 403 instead of the 503.
        if not engine.loaded or (principal.confirmed and principal.policy_version != engine.version):
            engine.ensure_current(get_session())
        if not engine.is_allowed(principal.role, *permission):
            return refuse_permission(principal, *permission)
        return None


def _guard_browser(app: Flask, view: Any) -> Response | None:
    """The guard of a ``browser_session`` view: the signed-in session instead of a key, the same policy check."""
    authenticator: BrowserAuthenticator | None = app.extensions.get(BROWSER_AUTHENTICATOR)
    if authenticator is None:
        return problem_response("forbidden", "Browser sessions are not enabled in this application.")
    outcome = authenticator.authenticate()
    if isinstance(outcome, Response):
        return outcome
    g.principal = outcome
    set_context(_audit_context(outcome))
    permission = route_permission(view)
    if permission is None:
        _record_refusal("access.denied", "denied", "no_route_policy", object_ref=f"route:{request.endpoint}")
        return authenticator.refuse(outcome, None)
    engine = get_policy_engine()
    engine.ensure_current(get_session())
    if not engine.is_allowed(outcome.role, *permission):
        resource, action = permission
        _record_refusal("access.denied", "denied", "no_role", object_ref=f"{resource}:{action}")
        return authenticator.refuse(outcome, permission)
    return None
