"""API conventions: problem documents for every kind of bad input, request ids, pagination, atomic writes."""

from __future__ import annotations

import json

import pytest
from apiflask import APIBlueprint
from sqlalchemy import func, select

from govsvc.auth.models import ApiClient
from govsvc.core.access import requires
from govsvc.core.db import get_session
from govsvc.core.errors import ConflictError
from tests.support.asserts import assert_problem


@pytest.fixture
def admin(auth_headers) -> dict[str, str]:
    return auth_headers("admin")


def test_malformed_json_is_a_400_problem(client, admin) -> None:
    for body in ("{bad", '{"name": "x",}', "\xff\xfe", "[1, 2"):
        response = client.post("/v1/clients", data=body, content_type="application/json", headers=admin)
        assert_problem(response, 400, "malformed-json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_body_that_is_not_json_is_a_415_problem(client, admin, content_type: str) -> None:
    response = client.post("/v1/clients", data="name=x&role=app", content_type=content_type, headers=admin)
    assert_problem(response, 415, "unsupported-media-type")


def test_json_suffix_media_types_are_accepted(client, admin) -> None:
    response = client.post(
        "/v1/clients",
        data=json.dumps({"name": "x", "role": "app"}),
        content_type="application/merge+json",
        headers=admin,
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": 5, "role": "app"}, "name"),
        ({"name": ["x"], "role": "app"}, "name"),
        ({"role": "app"}, "name"),
        ({"name": "x"}, "role"),
        ({"name": "", "role": "app"}, "name"),
        ({"name": "x" * 201, "role": "app"}, "name"),
        ({"name": "x", "role": "app", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "x", "role": "app", "expires_at": 1893456000}, "expires_at"),
        ({"name": "x", "role": "app", "admin": True}, "admin"),
        ([{"name": "x", "role": "app"}], None),
        ("just a string", None),
        (None, None),
    ],
)
def test_wrong_types_missing_and_unknown_fields_are_422_with_field_errors(client, admin, payload, field) -> None:
    response = client.post("/v1/clients", data=json.dumps(payload), content_type="application/json", headers=admin)
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"], body
    if field is not None:
        assert field in {error["field"] for error in body["errors"]}, body["errors"]


def test_an_empty_body_is_a_422(client, admin) -> None:
    body = assert_problem(client.post("/v1/clients", headers=admin), 422, "validation-error")
    assert {"name", "role"} <= {error["field"] for error in body["errors"]}


def test_an_oversized_body_is_a_413_problem(client, admin) -> None:
    huge = json.dumps({"name": "x" * 2_000_000, "role": "app"})
    assert_problem(
        client.post("/v1/clients", data=huge, content_type="application/json", headers=admin), 413, "payload-too-large"
    )


def test_unknown_ids_and_methods(client, admin) -> None:
    assert_problem(client.get("/v1/clients/cl_0000000000000000", headers=admin), 404, "not-found")
    assert_problem(client.delete("/v1/clients", headers=admin), 405, "method-not-allowed")


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=abc", "limit=1.5", "include_revoked=yes"])
def test_bad_query_parameters_are_422(client, admin, query: str) -> None:
    assert_problem(client.get(f"/v1/clients?{query}", headers=admin), 422, "validation-error")


@pytest.mark.parametrize("cursor", ["garbage!!", "eyJhZnRlciI6ICJ4In0", "W10", "eyJhZnRlciI6IC0xfQ"])
def test_forged_cursors_are_400(client, admin, cursor: str) -> None:
    assert_problem(client.get(f"/v1/clients?cursor={cursor}", headers=admin), 400, "invalid-cursor")


def test_cursor_pagination_walks_every_client_once(client, admin, issue_key) -> None:
    for _ in range(6):
        issue_key("app")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/v1/clients?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=admin).get_json()
        seen += [item["client_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7  # six app clients and the admin's own
    assert pages == 3


def test_include_revoked_false_hides_revoked_clients(client, admin) -> None:
    created = client.post("/v1/clients", json={"name": "old", "role": "app"}, headers=admin).get_json()
    client.post(f"/v1/clients/{created['client_id']}:revoke", headers=admin)
    visible = client.get("/v1/clients?include_revoked=false", headers=admin).get_json()["items"]
    assert created["client_id"] not in {item["client_id"] for item in visible}
    everything = client.get("/v1/clients?include_revoked=true", headers=admin).get_json()["items"]
    assert created["client_id"] in {item["client_id"] for item in everything}


def test_request_id_is_accepted_or_generated_and_returned(client, admin) -> None:
    response = client.get("/v1/me", headers={**admin, "X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    generated = client.get("/v1/me", headers=admin).headers["X-Request-Id"]
    assert len(generated) == 32
    hostile = client.get("/v1/me", headers={**admin, "X-Request-Id": "a b <script>"})
    assert hostile.headers["X-Request-Id"] != "a b <script>"
    problem = client.get("/v1/clients/none", headers={**admin, "X-Request-Id": "trace-9"}).get_json()
    assert problem["request_id"] == "trace-9"


def test_a_failing_request_leaves_nothing_half_written(app_factory, auth_headers) -> None:
    app = app_factory()
    blueprint = APIBlueprint("half", __name__)

    @blueprint.post("/v1/half-write")
    @requires("clients", "create")
    def half_write() -> dict[str, str]:
        from govsvc.auth.service import create_client

        create_client(get_session(), name="half", role="app", known_roles={"app"})
        raise ConflictError("second step failed")

    @blueprint.post("/v1/crash-write")
    @requires("clients", "create")
    def crash_write() -> dict[str, str]:
        from govsvc.auth.service import create_client

        create_client(get_session(), name="crash", role="app", known_roles={"app"})
        raise RuntimeError("bug")

    app.register_blueprint(blueprint)
    client = app.test_client()
    admin = auth_headers("admin")
    assert_problem(client.post("/v1/half-write", headers=admin), 409, "conflict")
    body = assert_problem(client.post("/v1/crash-write", headers=admin), 500, "internal-error")
    assert "bug" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        names = set(session.scalars(select(ApiClient.name)))
        assert "half" not in names and "crash" not in names
        assert session.scalar(select(func.count()).select_from(ApiClient)) == 1  # the admin only
