"""The service's own RBAC: every route guarded by casbin, deny by default, reloadable on every instance."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from apiflask import APIBlueprint
from sqlalchemy import create_engine, select, text

from govsvc.core.access import PUBLIC_ENDPOINTS, is_public, requires, route_permission
from govsvc.core.errors import ValidationFailed
from govsvc.policy.models import CasbinRule
from govsvc.policy.service import PolicyEngine, parse_policy_csv, roles_of, seed_policy
from tests.conftest import KNOWN_ROLES, POLICY_DIR
from tests.support.asserts import assert_problem


def test_the_issue_roles_exist() -> None:
    expected = {"admin", "compliance_officer", "dpo", "auditor", "app", "support_agent", "analyst", "legal"}
    assert expected <= KNOWN_ROLES


def test_every_route_is_public_or_declares_a_permission_some_role_holds(app) -> None:
    lines = parse_policy_csv((POLICY_DIR / "policy.csv").read_text())
    granted = {(line.values[1], line.values[2]) for line in lines if line.ptype == "p"}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        if is_public(view):
            assert rule.rule in (
                "/healthz",
                "/readyz",
                "/v1/audit/keys",
                "/.well-known/govsvc/consent-receipt-keys",
                "/v1/dsr/schemas/export-bundle.json",
                "/v1/dsr/downloads/<string:token>",  # the one-time token is the credential
                "/opendsr/v2/discovery",
                "/opendsr/v2/processor-certificate.pem",
                "/admin",  # redirects to /admin/
                "/admin/login",  # the admin UI's sign-in page
                "/admin/<path:unknown>",  # its not-found page
            ), rule.rule
            continue
        permission = route_permission(view)
        assert permission is not None, f"{rule.rule} declares no permission"
        assert permission in granted, f"{rule.rule} requires {permission}, which no role holds"


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        ("admin", "get", "/v1/clients", True),
        ("auditor", "get", "/v1/clients", True),
        ("app", "get", "/v1/clients", False),
        ("support_agent", "get", "/v1/clients", False),
        ("auditor", "post", "/v1/clients", False),
        ("compliance_officer", "post", "/v1/clients", False),
        ("app", "get", "/v1/policy", False),
        ("dpo", "get", "/v1/policy", True),
        ("dpo", "post", "/v1/policy:reload", False),
        ("analyst", "get", "/v1/me", True),
    ],
)
def test_role_matrix(client, auth_headers, role: str, method: str, path: str, allowed: bool) -> None:
    kwargs = {"json": {"name": "n", "role": "app"}} if method == "post" and path == "/v1/clients" else {}
    response = getattr(client, method)(path, headers=auth_headers(role), **kwargs)
    if allowed:
        assert response.status_code in (200, 201), response.get_json()
    else:
        body = assert_problem(response, 403, "forbidden")
        assert role in body["detail"]


def test_a_route_without_a_declared_permission_is_denied_to_everyone(app_factory, auth_headers) -> None:
    app = app_factory()
    blueprint = APIBlueprint("unguarded", __name__)

    @blueprint.get("/v1/unguarded")
    def unguarded() -> dict[str, str]:
        return {"secret": "nobody should see this"}

    @blueprint.get("/v1/unknown-policy")
    @requires("ghost", "read")
    def unknown_policy() -> dict[str, str]:
        return {"secret": "nobody should see this"}

    app.register_blueprint(blueprint)
    client = app.test_client()
    admin = auth_headers("admin")
    body = assert_problem(client.get("/v1/unguarded", headers=admin), 403, "forbidden")
    assert "no access policy" in body["detail"]
    assert_problem(client.get("/v1/unknown-policy", headers=admin), 403, "forbidden")
    assert_problem(client.get("/v1/unguarded"), 401, "unauthenticated")


def test_a_policy_change_applies_to_the_next_request_on_every_instance(app_factory, database, auth_headers) -> None:
    instance_a, instance_b = app_factory(), app_factory()
    client_a, client_b = instance_a.test_client(), instance_b.test_client()
    app_key, admin_key = auth_headers("app"), auth_headers("admin")
    assert client_b.get("/v1/clients", headers=app_key).status_code == 403  # instance B has loaded the policy
    engine = create_engine(database.url)
    with engine.begin() as connection:  # an edit of the stored policy (the policy editor will do this)
        connection.execute(CasbinRule.__table__.insert().values(ptype="p", v0="app", v1="clients", v2="read"))
    engine.dispose()
    assert client_b.get("/v1/clients", headers=app_key).status_code == 403  # not reloaded yet: version unchanged
    reload = client_a.post("/v1/policy:reload", headers=admin_key)
    assert reload.status_code == 200
    assert client_b.get("/v1/clients", headers=app_key).status_code == 200
    assert client_a.get("/v1/clients", headers=app_key).status_code == 200
    assert client_b.get("/v1/policy", headers=admin_key).get_json()["version"] == reload.get_json()["version"]


def test_seed_does_not_overwrite_and_replace_reapplies_the_files(app, database, tmp_path: Path) -> None:
    engine = create_engine(database.url)
    try:
        with engine.begin() as connection:
            connection.execute(CasbinRule.__table__.insert().values(ptype="p", v0="app", v1="clients", v2="read"))
        assert seed_policy(engine, POLICY_DIR).changed is False
        result = seed_policy(engine, POLICY_DIR, replace=True)
        assert result.changed and [line.as_row() for line in result.removed] == [["p", "app", "clients", "read"]]
        assert seed_policy(engine, POLICY_DIR, replace=True).changed is False
        with engine.connect() as connection:
            rows = connection.execute(select(CasbinRule.v0).where(CasbinRule.v0 == "app", CasbinRule.v1 == "clients"))
            assert rows.all() == []
    finally:
        engine.dispose()


def test_cli_seed_replace_prints_the_diff(app, database) -> None:
    engine = create_engine(database.url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM casbin_rule WHERE v0 = 'auditor' AND v1 = 'clients'"))
    engine.dispose()
    output = app.test_cli_runner().invoke(args=["seed", "--replace"])
    assert output.exit_code == 0, output.output
    assert "+ p, auditor, clients, read" in output.output


@pytest.mark.parametrize(
    ("text_", "message"),
    [
        ("x, admin, a, b\n", "unknown line type"),
        ("p, admin, a\n", "take 3 values"),
        ("g, admin\n", "take 2 values"),
        ("p, Admin, a, b\n", "lower-case"),
        ("p, admin, a, b\np, admin, a, b\n", "duplicate"),
        ("g, admin, dpo\n", "no p lines"),
    ],
)
def test_invalid_policy_files_are_refused_with_the_line_named(text_: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_policy_csv(text_)
    error = caught.value
    assert message in error.detail or any(message in item["message"] for item in error.errors or [])


def test_role_inheritance_through_g_lines(tmp_path: Path, app, database) -> None:
    lines = parse_policy_csv("p, auditor, audit, read\ng, dpo, auditor\n")
    assert roles_of(lines) == {"auditor", "dpo"}
    engine_db = app.extensions["govsvc.db"]
    from govsvc.policy.service import write_policy

    with engine_db.engine.begin() as connection:
        write_policy(connection, (POLICY_DIR / "model.conf").read_text(), lines, actor="test")
    engine = PolicyEngine(POLICY_DIR)
    with engine_db.transaction() as session:
        engine.ensure_current(session)
    assert engine.is_allowed("dpo", "audit", "read")
    assert not engine.is_allowed("auditor", "audit", "write")
    assert not engine.is_allowed("app", "audit", "read")


def test_an_engine_with_no_policy_denies_everything() -> None:
    assert PolicyEngine(POLICY_DIR).is_allowed("admin", "clients", "read") is False


def test_concurrent_checks_and_reloads_are_consistent(app) -> None:
    engine = PolicyEngine(POLICY_DIR)
    database = app.extensions["govsvc.db"]
    with database.transaction() as session:
        engine.ensure_current(session)
    errors: list[BaseException] = []

    def check() -> None:
        try:
            for _ in range(300):
                assert engine.is_allowed("admin", "clients", "read")
                assert not engine.is_allowed("app", "clients", "read")
        except BaseException as error:
            errors.append(error)

    def reload() -> None:
        for _ in range(5):
            with database.transaction() as session:
                engine._load(session, engine.version or 0)

    threads = [threading.Thread(target=check) for _ in range(4)] + [threading.Thread(target=reload)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
