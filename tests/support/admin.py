"""Driving the admin UI through Flask's test client: signing in as a role, forms with their CSRF token."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from govsvc.audit.models import AuditEvent
from govsvc.auth.service import create_admin_user
from tests.conftest import KNOWN_ROLES

PASSWORD = "correct horse battery staple"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _TOKEN.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def create_user(app: Any, username: str, role: str, password: str = PASSWORD) -> None:
    with app.extensions["govsvc.db"].transaction() as session:
        create_admin_user(session, username=username, password=password, role=role, known_roles=KNOWN_ROLES)


class AdminClient:
    """A browser's view of the admin UI: cookies kept, CSRF tokens taken from the pages as a browser submits them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = app.test_client()
        self.token: str | None = None

    def sign_in(self, username: str, password: str = PASSWORD, *, expect: int = 302) -> Any:
        page = self.client.get("/admin/login")
        response = self.client.post(
            "/admin/login",
            data={"username": username, "password": password, "csrf_token": csrf_of(page.get_data(as_text=True))},
        )
        assert response.status_code == expect, response.get_data(as_text=True)[:2000]
        if expect == 302:
            self.token = csrf_of(self.client.get("/admin/").get_data(as_text=True))
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any) -> Any:
        form = dict(data or {})
        if csrf:
            assert self.token, "sign in first"
            form.setdefault("csrf_token", self.token)
        return self.client.post(path, data=form, **kwargs)

    def text(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, (response.status_code, response.get_data(as_text=True)[:2000])
        return response.get_data(as_text=True)


def events(app: Any, action: str) -> list[AuditEvent]:
    """Recorded audit events of one action (sequenced or not)."""
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


ADMIN_ROLES = ("admin", "compliance_officer", "dpo", "legal", "auditor")


def role_clients(app: Any) -> Callable[[str], AdminClient]:
    """Create one admin user per admin UI role (username = role, ``-`` for ``_``); returns ``sign_in(role)``, a
    signed-in admin UI client of that role."""
    for role in ADMIN_ROLES:
        create_user(app, role.replace("_", "-"), role)

    def sign_in(role: str) -> AdminClient:
        ui = AdminClient(app)
        ui.sign_in(role.replace("_", "-"))
        return ui

    return sign_in
