"""API keys and admin users: issued once, stored hashed, refused when missing, invalid, revoked or expired."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from govsvc.auth.models import AdminUser, ApiClient
from govsvc.auth.service import authenticate_admin, authenticate_api_key, create_admin_user
from govsvc.core.db import utcnow
from govsvc.core.errors import AuthenticationFailed, ConflictError, ValidationFailed
from tests.conftest import KNOWN_ROLES
from tests.support.asserts import assert_problem


def _db(app):
    return app.extensions["govsvc.db"]


def test_created_key_is_random_shown_once_and_stored_only_as_a_hash(app, client, auth_headers) -> None:
    admin = auth_headers("admin")
    response = client.post("/v1/clients", json={"name": "crm", "role": "app"}, headers=admin)
    assert response.status_code == 201
    body = response.get_json()
    key = body["api_key"]
    prefix, secret = key.rsplit("_", 1)
    assert prefix == body["key_prefix"] and prefix.startswith("gsk_")
    assert len(secret) == 43 and secret.isalnum()  # 256 random bits
    assert response.headers["Location"].endswith(f"/v1/clients/{body['client_id']}")
    with _db(app).transaction(write=False) as session:
        row = session.scalar(select(ApiClient).where(ApiClient.client_id == body["client_id"]))
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        dumped = " ".join(str(value) for value in session.execute(text("SELECT * FROM api_clients")).all())
    assert secret not in dumped and key not in dumped
    # The key is never shown again.
    again = client.get(f"/v1/clients/{body['client_id']}", headers=admin).get_json()
    assert "api_key" not in again and key not in str(again)
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).get_json()["role"] == "app"


def test_two_keys_differ(issue_key) -> None:
    assert issue_key("app") != issue_key("app")


@pytest.mark.parametrize(
    ("header", "slug"),
    [
        (None, "unauthenticated"),
        ("Bearer", "invalid-credentials"),
        ("Basic dXNlcjpwYXNz", "invalid-credentials"),
        ("Bearer not-a-key", "invalid-credentials"),
        ("Bearer gsk_aaaaaaaa_" + "A" * 43, "invalid-credentials"),
    ],
)
def test_missing_or_invalid_credentials_get_401(client, header: str | None, slug: str) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.get("/v1/me", headers=headers)
    assert_problem(response, 401, slug)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_right_prefix_with_a_wrong_secret_is_refused(client, issue_key) -> None:
    key = issue_key("app")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert_problem(client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"}), 401, "invalid-credentials")


def test_revoked_key_is_refused_at_once(client, auth_headers, issue_key) -> None:
    admin = auth_headers("admin")
    created = client.post("/v1/clients", json={"name": "pos", "role": "app"}, headers=admin).get_json()
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    assert client.get("/v1/me", headers=headers).status_code == 200
    revoked = client.post(f"/v1/clients/{created['client_id']}:revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.get_json()["status"] == "revoked"
    body = assert_problem(client.get("/v1/me", headers=headers), 401, "invalid-credentials")
    assert "revoked" in body["detail"]
    assert_problem(client.post(f"/v1/clients/{created['client_id']}:revoke", headers=admin), 409, "conflict")
    assert_problem(client.post("/v1/clients/cl_unknown:revoke", headers=admin), 404, "not-found")


def test_expired_key_is_refused(app, client, issue_key) -> None:
    key = issue_key("app", expires_at=utcnow() + timedelta(seconds=30))
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with _db(app).transaction() as session:
        session.execute(
            ApiClient.__table__.update()
            .where(ApiClient.key_prefix == key.rsplit("_", 1)[0])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    body = assert_problem(client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}), 401, "invalid-credentials")
    assert "expired" in body["detail"]
    with _db(app).transaction() as session, pytest.raises(AuthenticationFailed):
        authenticate_api_key(session, key)


def test_creating_a_client_validates_role_and_expiry(client, auth_headers) -> None:
    admin = auth_headers("admin")
    body = assert_problem(
        client.post("/v1/clients", json={"name": "x", "role": "emperor"}, headers=admin), 422, "validation-error"
    )
    assert any(error["field"] == "role" and "app" in error["message"] for error in body["errors"])
    past = (utcnow() - timedelta(days=1)).isoformat()
    body = assert_problem(
        client.post("/v1/clients", json={"name": "x", "role": "app", "expires_at": past}, headers=admin),
        422,
        "validation-error",
    )
    assert body["errors"][0]["field"] == "expires_at"
    naive = assert_problem(
        client.post(
            "/v1/clients", json={"name": "x", "role": "app", "expires_at": "2030-01-01T00:00:00"}, headers=admin
        ),
        422,
        "validation-error",
    )
    assert naive["errors"][0]["field"] == "expires_at"


def test_admin_password_is_an_argon2id_hash_and_verifies(app) -> None:
    password = "correct horse battery staple"
    with _db(app).transaction() as session:
        create_admin_user(session, username="Alice", password=password, role="dpo", known_roles=KNOWN_ROLES)
    with _db(app).transaction() as session:
        user = session.scalar(select(AdminUser).where(AdminUser.username == "alice"))
        assert user.password_hash.startswith("$argon2id$")
        assert password not in user.password_hash
        principal = authenticate_admin(session, "alice", password)
        assert principal.role == "dpo" and principal.principal_id == "admin:alice"
        with pytest.raises(AuthenticationFailed):
            authenticate_admin(session, "alice", "wrong password!!")
        with pytest.raises(AuthenticationFailed):
            authenticate_admin(session, "nobody", password)


def test_admin_user_rules(app) -> None:
    with _db(app).transaction() as session:
        with pytest.raises(ValidationFailed):
            create_admin_user(session, username="bob", password="short", role="dpo", known_roles=KNOWN_ROLES)
        with pytest.raises(ValidationFailed):
            create_admin_user(
                session, username="bob", password="long enough pass", role="king", known_roles=KNOWN_ROLES
            )
        with pytest.raises(ValidationFailed):
            create_admin_user(
                session, username="b o b", password="long enough pass", role="dpo", known_roles=KNOWN_ROLES
            )
        create_admin_user(session, username="bob", password="long enough pass", role="dpo", known_roles=KNOWN_ROLES)
        with pytest.raises(ConflictError):
            create_admin_user(session, username="BOB", password="long enough pass", role="dpo", known_roles=KNOWN_ROLES)


def test_cli_creates_lists_and_revokes_clients_and_admins(app, client) -> None:
    runner = app.test_cli_runner()
    created = runner.invoke(args=["clients", "create", "--name", "loyalty", "--role", "app", "--expires-in-days", "30"])
    assert created.exit_code == 0, created.output
    fields = dict(line.split(":", 1) for line in created.stdout.splitlines() if ":" in line)
    key, client_id = fields["api_key"].strip(), fields["client_id"].strip()
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listed = runner.invoke(args=["clients", "list"])
    assert client_id in listed.stdout and "active" in listed.stdout and key not in listed.stdout
    assert runner.invoke(args=["clients", "revoke", client_id]).exit_code == 0
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    again = runner.invoke(args=["clients", "revoke", client_id])
    assert again.exit_code == 1 and "already revoked" in again.output
    bad_role = runner.invoke(args=["clients", "create", "--name", "x", "--role", "emperor"])
    assert bad_role.exit_code == 1 and "role" in bad_role.output
    admin = runner.invoke(
        args=["admins", "create", "--username", "carol", "--role", "auditor", "--password-stdin"],
        input="a long admin password\n",
    )
    assert admin.exit_code == 0, admin.output
    assert "a long admin password" not in admin.output
