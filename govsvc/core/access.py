"""Route guards: every route is authenticated and checked against the RBAC policy, or explicitly public.

Declare a route's permission with ``@requires("resource", "action")``. A route that declares none is denied
(403) even to an authenticated caller, and a permission with no policy line allowing it is denied too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request

from govsvc.audit.service import AuditContext, hash_ip, record, reset_context, set_context
from govsvc.auth.service import Principal, authenticate_api_key
from govsvc.core.db import get_db, get_session
from govsvc.core.errors import AuthenticationFailed
from govsvc.core.problems import problem_response
from govsvc.policy.service import PolicyEngine

F = TypeVar("F", bound=Callable[..., Any])
_PERMISSION_ATTR = "_govsvc_permission"
_PUBLIC_ATTR = "_govsvc_public"
PUBLIC_ENDPOINTS = frozenset({"openapi.spec", "static"})  # the API description and static files are public


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
    return AuditContext(
        principal_id=principal.principal_id if principal else None,
        role=principal.role if principal else None,
        client_id=principal.client_id if principal else None,
        ip_hash=hash_ip(request.remote_addr, current_app.extensions["govsvc.audit_ip_key"]),
        request_id=g.get("request_id"),
    )


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
        if "Authorization" not in request.headers:
            return problem_response(
                "unauthenticated",
                "Send an API key as 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": 'Bearer realm="govsvc"'},
            )
        token = _bearer_token()
        session = get_session()
        try:
            if token is None:
                raise AuthenticationFailed("The Authorization header must use the Bearer scheme.")
            principal = authenticate_api_key(session, token)
        except AuthenticationFailed as error:
            _record_refusal("auth.failed", "failure", _reason_code(error.detail))
            return problem_response(
                "invalid-credentials",
                error.detail,
                headers={"WWW-Authenticate": 'Bearer realm="govsvc", error="invalid_token"'},
            )
        g.principal = principal
        set_context(_audit_context(principal))
        permission = route_permission(view)
        if permission is None:
            _record_refusal("access.denied", "denied", "no_route_policy", object_ref=f"route:{request.endpoint}")
            return problem_response("forbidden", "This route has no access policy; it is denied to everyone.")
        engine = get_policy_engine()
        if principal.policy_version is None or principal.policy_version != engine.version:
            engine.ensure_current(session)
        if not engine.is_allowed(principal.role, *permission):
            resource, action = permission
            _record_refusal("access.denied", "denied", "no_role", object_ref=f"{resource}:{action}")
            return problem_response(
                "forbidden",
                f"The role {principal.role!r} may not {action} {resource}.",
                required=f"{resource}:{action}",
            )
        return None
