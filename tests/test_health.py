"""Liveness and readiness."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from tests.support.asserts import assert_problem


def test_healthz_needs_no_credentials(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_reports_database_migrations_and_policy(client, database) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["ready"] is True
    assert body["checks"]["database"]["backend"] == database.backend
    assert body["checks"]["migrations"]["current"] == body["checks"]["migrations"]["head"]
    assert body["checks"]["policy"]["ok"] is True
    assert body["checks"]["policy"]["roles"] >= 8


def test_readyz_is_503_when_migrations_are_behind(app, client, database) -> None:
    engine = create_engine(database.url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    engine.dispose()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["migrations"]["ok"] is False


def test_readyz_is_503_without_a_policy(app, client, database) -> None:
    engine = create_engine(database.url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM casbin_rule"))
        connection.execute(text("UPDATE policy_state SET version = version + 1"))
    engine.dispose()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["policy"]["ok"] is False


def test_unknown_route_is_a_problem(client) -> None:
    assert_problem(client.get("/v1/does-not-exist"), 404, "not-found")


def test_readyz_is_503_without_an_audit_signing_key(app, client, database) -> None:
    from tests.support.audit import tamper

    tamper(database.url, "DELETE FROM audit_signing_keys")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["audit_signing_key"]["ok"] is False
