"""Logs are JSON lines with request ids, and never contain keys, passwords or the secret key."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from tests.conftest import TEST_SECRET_KEY


@pytest.fixture
def captured_logs(app) -> Iterator[io.StringIO]:
    """What the service's own log handler writes, during the test."""
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_govsvc", False))
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


def test_logs_never_contain_the_secrets_used(app, client, auth_headers, captured_logs) -> None:
    admin = auth_headers("admin")
    admin_key = admin["Authorization"].split()[1]
    created = client.post("/v1/clients", json={"name": "crm", "role": "app"}, headers=admin).get_json()
    new_key = created["api_key"]
    client.get("/v1/me", headers={"Authorization": f"Bearer {new_key}"})
    client.get("/v1/me", headers={"Authorization": f"Bearer {new_key[:-1]}X"})  # a failed attempt
    client.post("/v1/clients", data="{bad", content_type="application/json", headers=admin)
    password = "a-very-private-password-42"
    runner = app.test_cli_runner()
    runner.invoke(args=["admins", "create", "--username", "dana", "--role", "dpo", "--password-stdin"], input=password)
    # Defence in depth: even a careless log call gets scrubbed.
    logging.getLogger("govsvc.test").warning("calling with %s and %s", f"Bearer {new_key}", TEST_SECRET_KEY)
    try:
        raise ValueError(f"bad key {admin_key}")
    except ValueError:
        logging.getLogger("govsvc.test").exception("failure")

    output = captured_logs.getvalue()
    assert output, "nothing was logged"
    for secret in (admin_key, new_key, new_key.split("_")[-1], password, TEST_SECRET_KEY):
        assert secret not in output
    assert "[REDACTED]" in output


def test_log_lines_are_json_with_request_ids(app, client, auth_headers, captured_logs) -> None:
    admin = auth_headers("admin")
    client.get("/v1/me", headers={**admin, "X-Request-Id": "req-42"})
    client.get("/v1/clients?cursor=Zm9v", headers=admin)
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "govsvc.access"]
    assert access[0]["request_id"] == "req-42"
    assert access[0]["route"] == "/v1/me" and access[0]["status"] == 200
    assert access[0]["principal"].startswith("client:cl_")
    assert all("cursor" not in json.dumps(line) for line in access)  # no query strings in logs
    assert {"time", "level", "logger", "message"} <= set(access[0])
