"""Admin UI sign-in: session cookies, CSRF, lockout and rate limiting, expiry, sign-out, guarded routes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from govsvc.admin.models import AdminLoginAttempt, AdminSession
from govsvc.auth.models import AdminUser
from govsvc.core.db import utcnow
from tests.support.admin import PASSWORD, AdminClient, create_user, csrf_of, events


@pytest.fixture
def ui(app) -> AdminClient:
    create_user(app, "dpo1", "dpo")
    return AdminClient(app)


def _session_rows(app) -> list[AdminSession]:
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        return list(session.scalars(select(AdminSession)))


def _set(app, statement) -> None:
    with app.extensions["govsvc.db"].transaction() as session:
        session.execute(statement)


def test_every_admin_page_needs_a_signed_in_session(app) -> None:
    client = app.test_client()
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin.") or rule.endpoint in ("admin.login", "admin.root", "admin.static"):
            continue
        if rule.endpoint == "admin.not_found":
            continue
        path = rule.rule.replace("<string:subject_id>", "sub_aaaaaaaaaaaaaaaa").replace("<string:key>", "k")
        path = path.replace("<string:client_id>", "cl_x")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(path, method=method, data={"x": "1"})
            assert response.status_code == 302, (method, path, response.status_code)
            assert response.headers["Location"].startswith("/admin/login"), (method, path)
            checked += 1
    assert checked >= 25


def test_sign_in_sets_a_secure_http_only_session_cookie(ui, app) -> None:
    response = ui.sign_in("dpo1")
    assert response.headers["Location"] == "/admin/"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("__Host-govsvc_admin="))
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    rows = _session_rows(app)
    assert len(rows) == 1 and rows[0].username == "dpo1" and token not in rows[0].token_hash  # only its hash
    assert "dpo1" in ui.text("/admin/")
    signed_in = events(app, "admin.signed_in")
    assert [e.actor_principal for e in signed_in] == ["admin:dpo1"]


def test_cookies_are_not_secure_in_development(app_factory) -> None:
    app = app_factory(environment="development")
    create_user(app, "dev1", "auditor")
    response = AdminClient(app).sign_in("dev1")
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("govsvc_admin="))
    assert "Secure" not in cookie and "HttpOnly" in cookie


def test_wrong_password_is_refused_audited_and_opens_no_session(ui, app) -> None:
    response = ui.sign_in("dpo1", "not the password", expect=401)
    assert "Invalid username or password." in response.get_data(as_text=True)
    assert _session_rows(app) == []
    failed = events(app, "admin.sign_in_failed")
    assert [(e.outcome, e.reason_code, e.object_ref) for e in failed] == [
        ("failure", "invalid_credentials", "admin:dpo1")
    ]
    ui.sign_in("nobody", "whatever password", expect=401)
    assert events(app, "admin.sign_in_failed")[-1].object_ref is None  # unknown names are not recorded


def test_the_sign_in_form_needs_its_csrf_token(ui, app) -> None:
    ui.client.get("/admin/login")
    response = ui.client.post("/admin/login", data={"username": "dpo1", "password": PASSWORD})
    assert response.status_code == 400
    assert _session_rows(app) == []


def test_repeated_failures_lock_the_account_until_the_lockout_ends(app_factory) -> None:
    app = app_factory(admin_login_max_failures=3, admin_lockout_minutes=15)
    create_user(app, "officer", "compliance_officer")
    ui = AdminClient(app)
    for _ in range(3):
        ui.sign_in("officer", "wrong password!", expect=401)
    locked = ui.sign_in("officer", PASSWORD, expect=429)  # the right password no longer opens it
    assert "locked" in locked.get_data(as_text=True)
    assert [e.reason_code for e in events(app, "admin.sign_in_failed")][-1] == "locked_out"
    assert len(events(app, "admin.locked_out")) == 1
    assert _session_rows(app) == []
    _set(app, update(AdminLoginAttempt).values(at=utcnow() - timedelta(minutes=16)))
    ui.sign_in("officer", PASSWORD)


def test_failures_from_one_address_are_rate_limited_across_usernames(app_factory) -> None:
    app = app_factory(admin_login_ip_attempts=3)
    create_user(app, "legal1", "legal")
    ui = AdminClient(app)
    for name in ("a1", "a2", "a3"):
        ui.sign_in(name, "guess guess guess", expect=401)
    response = ui.sign_in("legal1", PASSWORD, expect=429)
    assert "address" in response.get_data(as_text=True)
    assert events(app, "admin.sign_in_failed")[-1].reason_code == "rate_limited"


def test_a_role_without_the_admin_ui_permission_cannot_sign_in(app) -> None:
    create_user(app, "agent", "support_agent")
    response = AdminClient(app).sign_in("agent", expect=403)
    assert "may not use the admin UI" in response.get_data(as_text=True)
    assert events(app, "admin.sign_in_failed")[-1].reason_code == "no_role"


def test_idle_and_old_sessions_expire(ui, app) -> None:
    ui.sign_in("dpo1")
    assert ui.get("/admin/").status_code == 200
    _set(app, update(AdminSession).values(last_seen_at=utcnow() - timedelta(minutes=31)))
    response = ui.get("/admin/subjects")
    assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login?next=/admin/subjects")
    ui.sign_in("dpo1")
    _set(app, update(AdminSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert ui.get("/admin/").status_code == 302


def test_activity_keeps_a_session_alive(ui, app) -> None:
    ui.sign_in("dpo1")
    _set(app, update(AdminSession).values(last_seen_at=utcnow() - timedelta(minutes=29)))
    assert ui.get("/admin/").status_code == 200  # refreshes last_seen_at
    assert _session_rows(app)[0].last_seen_at > utcnow() - timedelta(minutes=1)


def test_sign_out_ends_the_session_for_good(ui, app) -> None:
    ui.sign_in("dpo1")
    cookie = ui.client.get_cookie("__Host-govsvc_admin")
    response = ui.post("/admin/logout")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/login"
    assert ui.get("/admin/").status_code == 302
    replay = app.test_client()
    replay.set_cookie("__Host-govsvc_admin", cookie.value)
    assert replay.get("/admin/").status_code == 302  # the old cookie opens nothing
    assert len(events(app, "admin.signed_out")) == 1


def test_sign_out_needs_the_csrf_token(ui, app) -> None:
    ui.sign_in("dpo1")
    assert ui.post("/admin/logout", csrf=False).status_code == 400
    assert ui.post("/admin/logout", {"csrf_token": "forged"}, csrf=False).status_code == 400
    assert ui.get("/admin/").status_code == 200


def test_disabling_a_user_ends_their_sessions(ui, app) -> None:
    ui.sign_in("dpo1")
    _set(app, update(AdminUser).where(AdminUser.username == "dpo1").values(disabled_at=utcnow()))
    assert ui.get("/admin/").status_code == 302


def test_a_changed_role_applies_to_the_next_request(ui, app) -> None:
    ui.sign_in("dpo1")
    assert ui.get("/admin/subjects").status_code == 200
    _set(app, update(AdminUser).where(AdminUser.username == "dpo1").values(role="auditor"))
    assert ui.get("/admin/subjects").status_code == 403


def test_after_sign_in_only_admin_paths_are_followed(ui) -> None:
    page = ui.client.get("/admin/login?next=https://evil.example/")
    assert 'value="/admin/"' in page.get_data(as_text=True)
    response = ui.client.post(
        "/admin/login",
        data={
            "username": "dpo1",
            "password": PASSWORD,
            "next": "//evil.example/x",
            "csrf_token": csrf_of(page.get_data(as_text=True)),
        },
    )
    assert response.headers["Location"] == "/admin/"
    ui.client.post("/admin/logout")
    page = ui.client.get("/admin/login?next=/admin/audit")
    response = ui.client.post(
        "/admin/login",
        data={"username": "dpo1", "password": PASSWORD, "next": "/admin/audit", "csrf_token": csrf_of(page.text)},
    )
    assert response.headers["Location"] == "/admin/audit"


def test_pages_carry_security_headers(ui) -> None:
    ui.sign_in("dpo1")
    response = ui.get("/admin/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert ui.get("/admin/static/css/admin.css").status_code == 200  # public, no session needed
