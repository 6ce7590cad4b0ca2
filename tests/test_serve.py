"""The real thing: gunicorn serving wsgi:app over HTTP, in production mode, on both databases."""

from __future__ import annotations

import subprocess
import sys

from govsvc.config import PROJECT_ROOT
from tests.conftest import TEST_ROOT_KEYS, TEST_SECRET_KEY
from tests.support.server import GunicornServer, http


def test_gunicorn_serves_ready_and_guards_every_route(database, issue_key, tmp_path) -> None:
    env = {
        "GOVSVC_ENV": "production",
        "GOVSVC_SECRET_KEY": TEST_SECRET_KEY,
        "GOVSVC_ROOT_KEYS": TEST_ROOT_KEYS,
        "GOVSVC_DATABASE_URL": database.url,
        "GOVSVC_INSTANCE_DIR": str(tmp_path),
    }
    key = issue_key("app")
    log_path = tmp_path / "gunicorn.log"
    with GunicornServer(env, log_path=log_path) as server:
        ready = http("GET", server.url + "/readyz")
        assert ready.status == 200 and ready.json()["ready"] is True
        refused = http("GET", server.url + "/v1/me")
        assert refused.status == 401
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:govsvc:problem:unauthenticated"
        me = http("GET", server.url + "/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status == 200 and me.json()["role"] == "app"
        forbidden = http(
            "POST",
            server.url + "/v1/clients",
            body={"name": "x", "role": "app"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert forbidden.status == 403 and forbidden.json()["type"] == "urn:govsvc:problem:forbidden"
        spec = http("GET", server.url + "/v1/openapi.json")
        assert spec.status == 200 and spec.json()["openapi"] == "3.1.0"
    log = log_path.read_text()
    assert key not in log and TEST_SECRET_KEY not in log


def test_production_mode_refuses_to_start_without_a_secret(tmp_path) -> None:
    env = {"GOVSVC_ENV": "production", "GOVSVC_INSTANCE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "GOVSVC_SECRET_KEY" in result.stderr


def test_the_command_line_names_a_bad_setting_in_one_line(tmp_path) -> None:
    env = {"GOVSVC_LOG_LEVEL": "chatty", "GOVSVC_INSTANCE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "from govsvc.cli import main; main()", "retention", "export-ledger"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: GOVSVC_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR"
