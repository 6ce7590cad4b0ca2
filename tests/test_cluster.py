"""Several stateless instances over one database: a change made through one instance applies to the next decision on
another (consent, taxonomy, policy, key destruction), and the periodic jobs run once per period across instances.

Each instance is a real gunicorn with one worker, so the second instance's caches are warm when the change arrives.
PostgreSQL only: it is what several instances share in production (and the live servers are slow to start).
"""

from __future__ import annotations

import hashlib
import time

import pytest
from sqlalchemy import create_engine, select, text

from govsvc.core.models import JobLease
from tests.support.server import GunicornServer, http, live_env

pytestmark = pytest.mark.parametrize("db_template", ["postgresql"], indirect=True)
NOTICE = {"id": "pn", "version": "1", "sha256": hashlib.sha256(b"n").hexdigest(), "language": "zh-CN"}


def _ok(response, status: int = 200):
    assert response.status == status, (response.status, response.body[:500])
    return response.json()


def _consent(server: GunicornServer, headers: dict[str, str], subject: str, event: str, purpose: str) -> None:
    body = {
        "subject": {"subject_id": subject},
        "event": event,
        "channel": "app",
        "actor": "subject",
        "items": [{"purpose": purpose, "scope": ""}],
    }
    if event == "given":
        body |= {"consent_type": "express", "notice": NOTICE}
    _ok(http("POST", server.url + "/v1/consents", body=body, headers=headers), 201)


def _decide(server: GunicornServer, headers: dict[str, str], subject: str, purpose: str, fields: list[str]) -> dict:
    body = {"subject": {"subject_id": subject}, "action": "read", "purpose": purpose, "fields": fields}
    return _ok(http("POST", server.url + "/v1/decisions", body=body, headers=headers))


def _codes(decision: dict) -> set[str]:
    return {reason["code"] for reason in decision["reasons"]}


def test_changes_through_one_instance_apply_to_the_next_request_on_another(database, issue_key, tmp_path) -> None:
    app = {"Authorization": f"Bearer {issue_key('app')}"}
    admin = {"Authorization": f"Bearer {issue_key('admin')}"}
    officer = {"Authorization": f"Bearer {issue_key('compliance_officer')}"}
    dpo = {"Authorization": f"Bearer {issue_key('dpo')}"}
    env = live_env(database.url, tmp_path, GOVSVC_SCHEDULER="thread", GOVSVC_SCHEDULER_INTERVAL_SECONDS="1")
    engine = create_engine(database.url)

    def lease_runs() -> int:
        with engine.connect() as connection:
            runs = connection.execute(select(JobLease.runs).where(JobLease.name == "dsr.maintenance")).scalar()
        return int(runs or 0)

    with GunicornServer(env, workers=1) as first, GunicornServer(env, workers=1) as second:
        for server in (first, second):  # the schedulers start with each process's first request
            assert http("GET", server.url + "/v1/openapi.json").status == 200
        started, runs_before = time.monotonic(), lease_runs()

        body = {"identifiers": [{"kind": "crm_id", "value": "C-7001", "system": "crm"}], "jurisdictions": ["pipl"]}
        subject = _ok(http("POST", first.url + "/v1/subjects", body=body, headers=app), 201)["subject_id"]

        # consent: given and withdrawn through the first, decided by the second
        purpose = "marketing.communications.sms"
        assert _codes(_decide(second, app, subject, purpose, ["mobile"])) == {"no_consent"}
        _consent(first, app, subject, "given", purpose)
        assert _decide(second, app, subject, purpose, ["mobile"])["decision"] == "allow"
        _consent(first, app, subject, "withdrawn", purpose)
        assert _codes(_decide(second, app, subject, purpose, ["mobile"])) == {"consent_withdrawn"}

        # taxonomy: a wider purpose version stored through the first needs re-consent on the second
        purpose = "personalize.profiling"
        _consent(first, app, subject, "given", purpose)
        assert _decide(second, app, subject, purpose, ["purchase_history"])["decision"] == "allow"
        current = _ok(http("GET", first.url + f"/v1/taxonomy/purposes/{purpose}", headers=officer))["purpose"]
        wider = {k: v for k, v in current.items() if k != "key"} | {
            "version": current["version"] + 1,
            "data_categories": [*current["data_categories"], "user.contact.email"],
        }
        _ok(http("PUT", first.url + f"/v1/taxonomy/purposes/{purpose}", body={"purpose": wider}, headers=officer))
        assert _codes(_decide(second, app, subject, purpose, ["purchase_history"])) == {"reconsent_required"}

        # keys: the second opens a token with its cached data key; the first shreds the key; the second refuses
        token = _ok(
            http(
                "POST",
                second.url + "/v1/crypto/encrypt",
                body={"subject_id": subject, "field": "email", "plaintext": "wei@example.cn"},
                headers=app,
            )
        )["token"]
        decrypt = {
            "subject_id": subject,
            "field": "email",
            "token": token,
            "purpose": "essential.service",
            "justification": "order 5512",
        }
        assert _ok(http("POST", second.url + "/v1/crypto/decrypt", body=decrypt, headers=app))["value"] == (
            "wei@example.cn"
        )
        erased = _ok(http("DELETE", first.url + f"/v1/vault/subjects/{subject}/profile", headers=dpo))
        assert erased["key_versions_destroyed"] >= 1
        refused = http("POST", second.url + "/v1/crypto/decrypt", body=decrypt, headers=app)
        assert refused.status == 410, refused.body
        assert refused.json()["type"] == "urn:govsvc:problem:key-destroyed"

        # policy: a permission withdrawn and reloaded through the first is refused by the second
        check = {"subject": {"subject_id": subject}, "action": "read", "purpose": "essential.service", "fields": []}
        check["fields"] = ["purchase_history"]
        assert http("POST", second.url + "/v1/decisions", body=check, headers=app).status == 200
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM casbin_rule WHERE ptype = 'p' AND v0 = 'app' AND v1 = 'decisions'"))
        _ok(http("POST", first.url + "/v1/policy:reload", headers=admin))
        denied = http("POST", second.url + "/v1/decisions", body=check, headers=app)
        assert denied.status == 403 and denied.json()["required"] == "decisions:create"

        # jobs: both schedulers fire every second; the lease lets one run per period, and survives its holder
        time.sleep(max(0.0, 6 - (time.monotonic() - started)))
        runs, elapsed = lease_runs() - runs_before, time.monotonic() - started
        assert 3 <= runs <= elapsed / 0.8 + 2, (runs, elapsed)  # unleased, two instances run twice per second
        first.kill()
        after_kill = lease_runs()
        time.sleep(3)
        assert lease_runs() >= after_kill + 2
    engine.dispose()
