"""The admin UI's Flask glue: session cookies and CSRF, the guard's browser authenticator, languages and time
zones (Flask-Babel), security headers, error pages and rendering helpers. The pages themselves are in ``api.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import Flask, Response, current_app, g, make_response, redirect, render_template, request, url_for
from flask_babel import Babel, format_datetime, lazy_gettext
from sqlalchemy.exc import SQLAlchemyError

from govsvc.admin import service
from govsvc.admin.registry import registry
from govsvc.admin.service import ActiveSession, AdminKeys, SignInPolicy
from govsvc.auth.service import Principal
from govsvc.core.access import BROWSER_AUTHENTICATOR, browser_session, get_policy_engine, requires
from govsvc.core.content import accepts
from govsvc.core.db import get_db, get_session

logger = logging.getLogger("govsvc.admin")
F = TypeVar("F", bound=Callable[..., Any])
TRANSLATIONS = Path(__file__).resolve().parent / "translations"
LOCALES = {"en": "en", "zh": "zh_Hans_CN"}  # our language codes -> Babel locales (catalog directories)
HTML_LANG = {"en": "en", "zh": "zh-Hans"}
LANGUAGE_NAMES = {"en": "English", "zh": "简体中文"}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


STATUS_LABELS = {
    "given": lazy_gettext("given"),
    "withdrawn": lazy_gettext("withdrawn"),
    "refused": lazy_gettext("refused"),
    "renewed": lazy_gettext("renewed"),
    "expired": lazy_gettext("expired"),
    "active": lazy_gettext("active"),
    "revoked": lazy_gettext("revoked"),
    "success": lazy_gettext("success"),
    "failure": lazy_gettext("failure"),
    "denied": lazy_gettext("denied"),
    # data-subject requests and their connector runs
    "received": lazy_gettext("received"),
    "pending_verification": lazy_gettext("pending verification"),
    "verified": lazy_gettext("verified"),
    "in_progress": lazy_gettext("in progress"),
    "extended": lazy_gettext("extended"),
    "completed": lazy_gettext("completed"),
    "partially_completed": lazy_gettext("partially completed"),
    "cancelled": lazy_gettext("cancelled"),
    "done": lazy_gettext("done"),
    "partial": lazy_gettext("partial"),
    "failed": lazy_gettext("failed"),
    "skipped": lazy_gettext("skipped"),
    "passed": lazy_gettext("passed"),
    "not_required": lazy_gettext("not required"),
    # retention runs and legal holds
    "running": lazy_gettext("running"),
    "released": lazy_gettext("released"),
}


def status_label(value: str) -> Any:
    """A status word in the user's language (the value itself when it has no translation)."""
    return STATUS_LABELS.get(value, value)


def page(resource: str, action: str) -> Callable[[F], F]:
    """Guard an admin UI view: the signed-in session (CSRF-checked on every unsafe method), the policy's
    ``resource:action``, and form bodies accepted."""

    def mark(view: F) -> F:
        return accepts(*FORM_TYPES)(browser_session(requires(resource, action)(view)))

    return mark


def secure_cookies() -> bool:
    """Cookies are ``Secure`` outside development (testing included, as in production)."""
    return current_app.config["GOVSVC_SETTINGS"].environment != "development"


def session_cookie_name() -> str:
    return "__Host-govsvc_admin" if secure_cookies() else "govsvc_admin"


def login_cookie_name() -> str:
    return "__Host-govsvc_login" if secure_cookies() else "govsvc_login"


LANGUAGE_COOKIE = "govsvc_lang"


def set_cookie(response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=secure_cookies(), httponly=True, samesite="Lax")


def admin_keys() -> AdminKeys:
    return current_app.extensions["govsvc.admin_keys"]


def sign_in_policy() -> SignInPolicy:
    return SignInPolicy.from_settings(current_app.config["GOVSVC_SETTINGS"])


def active_session() -> ActiveSession:
    """The signed-in session of this request (set by the guard)."""
    return g.admin


def allowed(resource: str, action: str) -> bool:
    """May the signed-in role do this? (for menus, panels and buttons; routes are guarded by ``@requires``)"""
    active = g.get("admin")
    return active is not None and get_policy_engine().is_allowed(active.principal.role, resource, action)


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def submitted_csrf() -> str | None:
    return request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)


def csrf_token() -> str:
    """The token forms carry: bound to the session, or to the sign-in form's cookie before one exists."""
    active = g.get("admin")
    if active is not None:
        return admin_keys().csrf_token(active.token_hash)
    nonce = g.get("login_nonce") or request.cookies.get(login_cookie_name())
    if not nonce:
        nonce = g.login_nonce = service.new_nonce()
    return admin_keys().csrf_token("login:" + nonce)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of the admin UI only (never another site)."""
    default = url_for("admin.dashboard")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin/") or "\\" in target:
        return default
    return target


def render(template: str, status: int = 200, **context: Any) -> Response:
    return make_response(render_template(template, **context), status)


class AdminAuthenticator:
    """The guard's ``BrowserAuthenticator``: who is signed in, CSRF on unsafe methods, and the 403 page."""

    def authenticate(self) -> Principal | Response:
        token = request.cookies.get(session_cookie_name())
        active = service.resume(get_session(), sign_in_policy(), token) if token else None
        if active is None:
            return self._to_sign_in()
        g.admin = active
        if request.method not in SAFE_METHODS and not admin_keys().csrf_valid(active.token_hash, submitted_csrf()):
            return render("admin/error.html", 400, title_key="csrf", status_code=400)
        if service.needs_touch(active):
            g.admin_touch = active  # recorded once the request's own transaction has ended (record_activity)
        return active.principal

    def refuse(self, principal: Principal, permission: tuple[str, str] | None) -> Response:
        return render("admin/error.html", 403, title_key="forbidden", status_code=403, permission=permission)

    @staticmethod
    def _to_sign_in() -> Response:
        target = url_for("admin.login", next=request.full_path.rstrip("?") if request.method == "GET" else None)
        if is_htmx():
            return Response(status=401, headers={"HX-Redirect": target})
        response = redirect(target)
        response.delete_cookie(session_cookie_name(), path="/", secure=secure_cookies(), httponly=True)
        return response


def record_activity(_error: BaseException | None) -> None:
    """Teardown: record the session's activity in a short transaction of its own, after the request's transaction
    has committed or rolled back (so it never turns a read into a write, nor waits on the request's own lock)."""
    active = g.pop("admin_touch", None)
    if active is None:
        return
    try:
        with get_db().transaction() as session:
            service.touch(session, active)
    except SQLAlchemyError:
        logger.warning("admin session activity not recorded", exc_info=True)


def current_language() -> str:
    """The signed-in user's language, else the language cookie, else the browser's, else English."""
    active = g.get("admin")
    if active is not None and active.preferences.language in LOCALES:
        return active.preferences.language
    chosen = g.get("language") or request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LOCALES:
        return chosen
    return request.accept_languages.best_match(list(LOCALES)) or "en"


def current_time_zone() -> str:
    active = g.get("admin")
    return active.preferences.time_zone if active is not None else service.DEFAULT_TIME_ZONE


def local_zone() -> ZoneInfo:
    return ZoneInfo(current_time_zone())


def when(value: datetime | None, style: str = "medium") -> str:
    """A UTC datetime in the user's time zone and language ('' for None)."""
    if value is None:
        return ""
    return format_datetime(value, style)


def template_context() -> dict[str, Any]:
    language = current_language()
    return {
        "nav_items": registry.nav_for(allowed),
        "principal": g.admin.principal if g.get("admin") else None,
        "csrf_token": csrf_token,
        "csrf_field": CSRF_FIELD,
        "language": language,
        "html_lang": HTML_LANG[language],
        "language_names": LANGUAGE_NAMES,
        "time_zone": current_time_zone(),
        "allowed": allowed,
        "when": when,
        "endpoint": request.endpoint or "",
    }


def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "admin.static":
        response.headers["Cache-Control"] = "no-store"
    nonce = g.get("login_nonce")
    if nonce:
        set_cookie(response, login_cookie_name(), nonce)
    if g.get("language"):
        set_cookie(response, LANGUAGE_COOKIE, g.language, max_age=365 * 24 * 3600)
    return response


def init_admin(app: Flask) -> None:
    """Mount the admin UI on ``/admin``: Babel, the browser authenticator, the pages and their error pages."""
    from govsvc.admin import dashboard, dsr_pages, retention_pages  # noqa: F401 - register the dashboard panels and phase-2 pages
    from govsvc.admin.api import bp

    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    Babel(
        app,
        locale_selector=lambda: LOCALES[current_language()],
        timezone_selector=current_time_zone,
    )
    app.extensions["govsvc.admin_keys"] = AdminKeys(app.config["GOVSVC_SETTINGS"].secret_key)
    app.extensions[BROWSER_AUTHENTICATOR] = AdminAuthenticator()
    # for macros, imported without context
    app.jinja_env.globals.update(csrf_token=csrf_token, csrf_field=CSRF_FIELD, status_label=status_label)
    app.register_blueprint(bp)
