"""Browser tests: Debian's Chromium driven by Playwright (no browser download), and data seeded through the API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from govsvc.auth.service import create_admin_user, create_client
from govsvc.core.db import Database
from tests.support.server import http

CHROMIUM = Path(os.environ.get("GOVSVC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
PASSWORD = "correct horse battery staple"
ADMIN_ROLES = ("admin", "compliance_officer", "dpo", "legal", "auditor")
PROFILE = {
    "name": "张伟",
    "email": "zhang.wei@example.cn",
    "mobile": "+8613812345678",
    "id_number": "11010519491231002X",
    "city": "上海市",
}
NOTICE = {"id": "privacy-notice", "version": "2026-11", "sha256": "a" * 64, "language": "zh-CN"}


def seed_users(database_url: str, known_roles: frozenset[str]) -> dict[str, str]:
    """One admin user per admin UI role (username = role, ``-`` for ``_``), and an ``app`` API key."""
    database = Database(database_url)
    try:
        with database.transaction() as session:
            for role in ADMIN_ROLES:
                create_admin_user(
                    session, username=role.replace("_", "-"), password=PASSWORD, role=role, known_roles=known_roles
                )
            issued = create_client(session, name="crm", role="app", known_roles=known_roles)
    finally:
        database.dispose()
    return {"app_key": issued.api_key}


def seed_subject(base_url: str, app_key: str) -> str:
    """A subject with a profile and a marketing consent, registered as an app would (through the API)."""
    headers = {"Authorization": f"Bearer {app_key}"}
    created = http(
        "POST",
        base_url + "/v1/subjects",
        body={"identifiers": [{"kind": "email", "value": PROFILE["email"]}], "jurisdictions": ["pipl"]},
        headers=headers,
    )
    assert created.status == 201, created.body
    subject_id = created.json()["subject_id"]
    profile = http(
        "PUT", base_url + f"/v1/vault/subjects/{subject_id}/profile", body={"fields": PROFILE}, headers=headers
    )
    assert profile.status == 200, profile.body
    consent = http(
        "POST",
        base_url + "/v1/consents",
        body={
            "subject": {"subject_id": subject_id},
            "event": "given",
            "items": [{"purpose": "marketing.communications.email"}],
            "consent_type": "express",
            "notice": NOTICE,
            "channel": "web",
        },
        headers=headers,
    )
    assert consent.status == 201, consent.body
    return subject_id


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium of Debian's package, through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
