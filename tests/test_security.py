"""Security checks: every route refuses a request without credentials, bad API keys are limited per address, every
response carries the security headers, and the log scanner that checks the whole suite's logs finds leaks."""

from __future__ import annotations

import re
import time

import pytest

from govsvc.core.access import PUBLIC_ENDPOINTS, is_public
from govsvc.core.security import FailureLimiter
from tests.support.asserts import assert_problem
from tests.support.logscan import LogCollector

_PLACEHOLDER = re.compile(r"<(?:([a-z]+)(?:\([^)]*\))?:)?([a-z_]+)>")


def test_every_non_public_route_refuses_a_request_without_credentials(app, client) -> None:
    """Not only declared (tests/test_rbac.py): enforced, for every method of every rule in the URL map."""
    checked = 0
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint == "static" or is_public(view):
            continue
        path = _PLACEHOLDER.sub(lambda m: "1" if m.group(1) == "int" else "x1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method)
            if rule.rule.startswith("/admin"):  # browser pages send the visitor to the sign-in page
                assert response.status_code in (302, 303, 401), (method, rule.rule, response.status_code)
                if response.status_code != 401:
                    assert "/admin/login" in response.headers["Location"]
            else:
                assert response.status_code == 401, (method, rule.rule, response.status_code)
            checked += 1
    assert checked > 100


def test_bad_api_keys_are_limited_per_address(app_factory, issue_key) -> None:
    app = app_factory(api_auth_max_failures=3, api_auth_window_seconds=60)
    client = app.test_client()
    good = {"Authorization": f"Bearer {issue_key('admin')}"}
    attacker = {"REMOTE_ADDR": "203.0.113.7"}
    for attempt in range(3):
        bad = {"Authorization": f"Bearer gsk_abcdefgh_{'x' * 40}{attempt}"}
        assert_problem(client.get("/v1/me", headers=bad, environ_base=attacker), 401, "invalid-credentials")
    limited = client.get("/v1/me", headers={"Authorization": "Bearer nonsense"}, environ_base=attacker)
    assert_problem(limited, 429, "rate-limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    # the address is held off even with a valid key; other addresses are not affected
    assert_problem(client.get("/v1/me", headers=good, environ_base=attacker), 429, "rate-limited")
    assert client.get("/v1/me", headers=good, environ_base={"REMOTE_ADDR": "198.51.100.2"}).status_code == 200
    # a request without credentials is a 401, not counted
    assert_problem(client.get("/v1/me", environ_base={"REMOTE_ADDR": "198.51.100.3"}), 401, "unauthenticated")


def test_the_failure_window_slides() -> None:
    limiter = FailureLimiter(2, 0.2)
    limiter.failed("a")
    assert limiter.retry_after("a") is None
    limiter.failed("a")
    assert limiter.retry_after("a") == 1 and limiter.retry_after("b") is None
    time.sleep(0.25)
    assert limiter.retry_after("a") is None


def _assert_security_headers(response, *, hsts: bool) -> None:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] in ("no-referrer", "same-origin")
    assert ("Strict-Transport-Security" in headers) is hsts
    if hsts:
        assert headers["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.mark.parametrize("environment", ["testing", "development"])
def test_security_headers_on_api_problems_and_pages(app_factory, auth_headers, environment: str) -> None:
    client = app_factory(environment=environment).test_client()
    hsts = environment != "development"
    me = client.get("/v1/me", headers=auth_headers("admin"))
    assert me.status_code == 200
    _assert_security_headers(me, hsts=hsts)
    assert me.headers["Content-Security-Policy"].startswith("default-src 'none'")
    _assert_security_headers(client.get("/v1/nowhere"), hsts=hsts)  # a problem document
    _assert_security_headers(client.get("/healthz"), hsts=hsts)
    page = client.get("/admin/login")
    assert page.status_code == 200 and page.mimetype == "text/html"
    _assert_security_headers(page, hsts=hsts)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]  # the UI's own page policy


def test_the_log_scan_finds_secrets_personal_values_and_keys(tmp_path) -> None:
    collector = LogCollector()
    collector.add_secret("s3cret-value-of-the-test")
    collector.lines.append('{"message": "all well", "subject": "sub_123"}')
    assert collector.leaks() == []
    collector.lines.append('{"message": "lookup for +8613812345678"}')
    server_log = tmp_path / "server.log"
    server_log.write_text("key gsk_abcdefgh_0123456789abcdef0123456789 and s3cret-value-of-the-test\n")
    collector.add_file(server_log)
    leaks = collector.leaks()
    assert any("personal value" in leak for leak in leaks)
    assert any("API key" in leak and str(server_log) in leak for leak in leaks)
    assert any("secret used by the tests" in leak for leak in leaks)
    assert all("s3cret-value-of-the-test" not in leak for leak in leaks)
