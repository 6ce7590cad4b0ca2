"""The Python client and the Flask decorator, against the real service under gunicorn."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import Flask, request

from govsvc.client import GovsvcClient, GovsvcError, GovsvcUnavailable, apply_obligations
from govsvc.client.flaskext import require_decision
from govsvc.consent.receipts import verify_receipt
from tests.conftest import TEST_AUDIT_ORIGIN, TEST_ROOT_KEYS, TEST_SECRET_KEY
from tests.support.server import GunicornServer, free_port, http

NOTICE = {"id": "pn", "version": "3", "sha256": hashlib.sha256(b"n").hexdigest(), "language": "en"}


@pytest.fixture
def server(database, tmp_path) -> Iterator[GunicornServer]:
    env = {
        "GOVSVC_ENV": "production",
        "GOVSVC_SECRET_KEY": TEST_SECRET_KEY,
        "GOVSVC_ROOT_KEYS": TEST_ROOT_KEYS,
        "GOVSVC_DATABASE_URL": database.url,
        "GOVSVC_INSTANCE_DIR": str(tmp_path),
        "GOVSVC_AUDIT_ORIGIN": TEST_AUDIT_ORIGIN,
        "GOVSVC_AUDIT_SEQUENCER": "off",
        "GOVSVC_LOG_LEVEL": "WARNING",
    }
    with GunicornServer(env, workers=1) as running:
        yield running


@pytest.fixture
def client(server, issue_key) -> GovsvcClient:
    return GovsvcClient(server.url, issue_key("app"))


def _register(server, key: str, email: str, jurisdictions=("gdpr:ie",)) -> str:
    body = {"identifiers": [{"kind": "email", "value": email}], "jurisdictions": list(jurisdictions)}
    response = http("POST", server.url + "/v1/subjects", body=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 201
    return response.json()["subject_id"]


def test_decide_give_and_withdraw_through_the_client(server, client) -> None:
    subject = _register(server, client._api_key, "mary@example.ie")
    by_email = {"kind": "email", "value": "mary@example.ie"}
    denied = client.decide(by_email, "read", "marketing.communications.email", fields=["email"])
    assert not denied.allowed and denied.reason_codes == ["no_consent"] and denied.apply({"email": "x"}) == {}
    result = client.give_consent(
        subject, ["marketing.communications.email"], channel="web", consent_type="express", notice=NOTICE
    )
    claims = verify_receipt(result["receipts"][0], client.receipt_keys())
    assert claims["pii_principal_id"] == subject
    allowed = client.decide(subject, "read", "marketing.communications.email", fields=["email", "name"])
    assert allowed.allowed and allowed.apply({"email": "mary@example.ie", "name": "Mary", "extra": 1}) == {
        "email": "mary@example.ie",
        "name": "Mary",
    }
    client.withdraw_consent(subject, ["marketing.communications.email"], channel="web")
    assert client.decide(subject, "read", "marketing.communications.email", fields=["email"]).reason_codes == [
        "consent_withdrawn"
    ]
    assert {row["status"] for row in client.consents(subject)} == {"withdrawn"}
    batch = client.decide_batch(
        [
            {"subject": subject, "action": "read", "purpose": "essential.service", "fields": ["email"]},
            {"subject": subject, "action": "read", "purpose": "nope", "fields": ["email"]},
        ]
    )
    assert batch[0].allowed and isinstance(batch[1], GovsvcError) and batch[1].status == 422


def test_client_errors_are_typed(server, client) -> None:
    with pytest.raises(GovsvcError) as caught:
        client.decide({"kind": "email", "value": "nobody@example.ie"}, "read", "essential.service", fields=["email"])
    assert caught.value.status == 404 and caught.value.type.endswith("not-found")
    with pytest.raises(GovsvcError) as caught:
        GovsvcClient(server.url, "gsk_wrongkey_x").decide("sub_x", "read", "essential.service", fields=["email"])
    assert caught.value.status == 401
    assert "gsk_" not in repr(client)


class _Flaky(BaseHTTPRequestHandler):
    failures = 2
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = 503 if type(self).calls <= type(self).failures else 200
        body = json.dumps(
            {"title": "busy"}
            if status == 503
            else {
                "decision_id": "d" * 32,
                "decision": "allow",
                "reasons": [],
                "obligations": {"email": "show"},
                "subject_id": "sub_x",
                "purpose": "p",
                "purpose_version": 1,
            }
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_retries_on_503_then_fails_closed() -> None:
    port = free_port()
    stub = ThreadingHTTPServer(("127.0.0.1", port), _Flaky)
    thread = threading.Thread(target=stub.serve_forever, daemon=True)
    thread.start()
    try:
        _Flaky.calls, _Flaky.failures = 0, 2
        decision = GovsvcClient(f"http://127.0.0.1:{port}", "k", retries=2, backoff=0.01).decide(
            "sub_x", "read", "p", fields=["email"]
        )
        assert decision.allowed and _Flaky.calls == 3
        _Flaky.calls, _Flaky.failures = 0, 10
        with pytest.raises(GovsvcUnavailable):
            GovsvcClient(f"http://127.0.0.1:{port}", "k", retries=1, backoff=0.01).decide("sub_x", "read", "p")
        assert _Flaky.calls == 2
    finally:
        stub.shutdown()
    with pytest.raises(GovsvcUnavailable):  # nothing listens there
        GovsvcClient(f"http://127.0.0.1:{free_port()}", "k", retries=0, timeout=0.5).decide("sub_x", "read", "p")


def test_apply_obligations() -> None:
    record = {"name": "Wang Fang", "email": "wang@example.cn", "mobile": "13812345678", "health": "x", "id": 7}
    obligations = {
        "name": "show",
        "email": "mask:partial",
        "mobile": "mask:partial",
        "health": "withhold",
        "id": "tokenize",
    }
    shown = apply_obligations(record, obligations)
    assert shown["name"] == "Wang Fang" and shown["email"] == "w***@example.cn" and shown["mobile"] == "138****5678"
    assert "health" not in shown and shown["id"].startswith("tok_") and shown["id"] != "7"


def test_the_flask_decorator_guards_a_view_and_filters_its_result(server, client) -> None:
    _register(server, client._api_key, "ann@example.ie")
    app = Flask("crm")

    @app.get("/customers/<email>")
    @require_decision(
        client,
        purpose="essential.service.operations.support",
        fields=["name", "mobile"],
        subject=lambda: {"kind": "email", "value": request.view_args["email"]},
        acting_for=lambda: {"roles": ["support_agent"]},
    )
    def customer(email: str) -> dict:
        return {"name": "Ann Lee", "mobile": "+353861234567", "health_notes": "never leaves"}

    @app.get("/marketing/<email>")
    @require_decision(
        client,
        purpose="marketing.communications.email",
        fields=["email"],
        subject=lambda: {"kind": "email", "value": request.view_args["email"]},
    )
    def marketing(email: str) -> dict:
        return {"email": email}

    web = app.test_client()
    shown = web.get("/customers/ann@example.ie").get_json()
    assert shown == {"name": "A*****e", "mobile": "+35******4567"}
    refused = web.get("/marketing/ann@example.ie")
    assert refused.status_code == 403 and refused.get_json()["reasons"] == ["no_consent"]
    assert web.get("/customers/nobody@example.ie").status_code == 404
    down = GovsvcClient(f"http://127.0.0.1:{free_port()}", "k", retries=0, timeout=0.5)
    offline = Flask("offline")

    @offline.get("/x")
    @require_decision(down, purpose="essential.service", fields=["email"], subject=lambda: "sub_x")
    def x() -> dict:
        return {"email": "leak@example.ie"}

    response = offline.test_client().get("/x")
    assert response.status_code == 503 and "leak" not in response.get_data(as_text=True)
