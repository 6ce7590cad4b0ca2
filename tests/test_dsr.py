"""Data-subject requests over HTTP, on both databases: intake, verification, the status machine, fulfilment across
the vault, the consent ledger, the audit log and a real local webhook app, export bundles, erasure with holds and
retention, letters, overdue detection and the OpenDSR facade."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text, update

from govsvc.audit.models import AuditEvent
from govsvc.core.db import utcnow
from govsvc.dsr import opendsr
from govsvc.dsr.models import DsrRequest
from govsvc.dsr.webhooks import verify_signature
from tests.support.asserts import assert_problem

EMAIL = "li.lei@example.cn"
PHONE = "+8613812345678"
PROFILE = {"name": "李雷", "email": EMAIL, "mobile": PHONE, "preferences": "短信优先", "loyalty_tier": "gold"}
NOTICE = {"id": "privacy", "version": "3", "sha256": "a" * 64, "language": "zh"}


class App:
    """A real local HTTP app that answers DSR webhooks (and OpenDSR callbacks), recording what it received."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_first = 0
        self.records = [
            {
                "record_type": "order",
                "record_id": f"o{i}",
                "category": "user.behavior.purchase_history",
                "provenance": "observed",
                "fields": {"item": f"茶叶 {i}", "amount": i},
            }
            for i in range(5)
        ]
        self.retained: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls.append({"headers": dict(self.headers), "raw": raw, "body": json.loads(raw)})
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.loads(raw)
                if body.get("operation") == "collect":
                    page = 0 if body.get("cursor") is None else 1
                    reply = {
                        "records": outer.records[page * 3 : page * 3 + 3],
                        "next_cursor": "p1" if page == 0 else None,
                    }
                else:
                    reply = {"status": "done", "counts": {"rows": 7}, "retained": outer.retained}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dsr"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webapp() -> Iterator[App]:
    server = App()
    yield server
    server.close()


@pytest.fixture
def keys(auth_headers) -> dict[str, dict[str, str]]:
    return {role: auth_headers(role) for role in ("app", "dpo", "compliance_officer", "support_agent", "admin")}


def make_subject(client, keys, jurisdictions=("gdpr",), profile=PROFILE) -> str:
    body = {
        "identifiers": [
            {"kind": "email", "value": EMAIL},
            {"kind": "phone", "value": PHONE},
            {"kind": "crm_id", "value": "C-77", "system": "crm"},
        ],
        "jurisdictions": list(jurisdictions),
    }
    response = client.post("/v1/subjects", json=body, headers=keys["app"])
    assert response.status_code == 201, response.get_json()
    subject = response.get_json()["subject_id"]
    put = client.put(f"/v1/vault/subjects/{subject}/profile", json={"fields": profile}, headers=keys["app"])
    assert put.status_code == 200, put.get_json()
    patch = client.patch(
        f"/v1/vault/subjects/{subject}/profile", json={"fields": {"name": "李磊"}}, headers=keys["app"]
    )
    assert patch.status_code == 200
    consent = client.post(
        "/v1/consents",
        json={
            "subject": {"subject_id": subject},
            "event": "given",
            "items": [{"purpose": "marketing.communications.email"}],
            "consent_type": "express",
            "notice": NOTICE,
            "channel": "web",
        },
        headers=keys["app"],
    )
    assert consent.status_code == 201, consent.get_json()
    return subject


def create(client, keys, subject: str, request_type: str, **extra) -> dict:
    body = {"type": request_type, "subject": {"subject_id": subject}, "channel": "web", **extra}
    response = client.post("/v1/dsr/requests", json=body, headers=keys["app"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def verify(client, keys, request_id: str, points=None, declaration=False) -> dict:
    points = points or [{"kind": "email", "value": "LI.LEI@example.cn"}, {"kind": "phone", "value": "138 1234 5678"}]
    response = client.post(
        f"/v1/dsr/requests/{request_id}/verification",
        json={"method": "data_points", "data_points": points, "signed_declaration": declaration},
        headers=keys["app"],
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def fulfil(client, keys, request_id: str, **body) -> dict:
    response = client.post(f"/v1/dsr/requests/{request_id}:fulfil", json=body, headers=keys["compliance_officer"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def audit_rows(database) -> list:
    engine = create_engine(database.url)
    with engine.connect() as connection:
        rows = list(connection.execute(select(AuditEvent)).all())
    engine.dispose()
    return rows


def test_access_request_end_to_end_with_a_one_time_download(client, keys, database) -> None:
    subject = make_subject(client, keys)
    created = create(client, keys, subject, "access", language="zh")
    assert created["status"] == "pending_verification"
    assert created["verification"]["level"] == "reasonable"
    assert created["deadlines"]["governing_regime"] == "gdpr" and created["sla"]["overdue"] is False
    request_id = created["request_id"]
    fulfil_early = client.post(f"/v1/dsr/requests/{request_id}:fulfil", json={}, headers=keys["compliance_officer"])
    assert_problem(fulfil_early, 409, "conflict")
    one_point = verify(client, keys, request_id, points=[{"kind": "email", "value": EMAIL}])
    assert one_point["status"] == "pending_verification" and one_point["verification"]["outcome"] == "failed"
    verified = verify(client, keys, request_id)
    assert verified["status"] == "verified" and verified["verification"]["method"] == "data_points"
    result = fulfil(client, keys, request_id)
    assert result["request"]["status"] == "completed"
    url = result["download"]["url"]
    assert result["download"]["records"]["vault"] >= 6
    download = client.get(url)
    assert download.status_code == 200 and download.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(download.data))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["request_id"] == request_id and manifest["schema"] == "urn:govsvc:dsr:export-bundle:v1"
    vault = json.loads(archive.read("data/vault.json"))
    values = {
        r["fields"]["field"]: r["fields"]["value"] for r in vault["records"] if r["record_type"] == "profile_field"
    }
    assert values["email"] == EMAIL and values["name"] == "李磊"  # the subject's own copy is not masked
    history = [r for r in vault["records"] if r["record_type"] == "profile_field_history"]
    assert history[0]["fields"]["value"] == "李雷"
    consent_csv = archive.read("data/consent.csv").decode("utf-8-sig")
    assert "marketing.communications.email" in consent_csv and consent_csv.startswith("source,record_type")
    assert "access_report" in archive.read("data/audit.json").decode()
    schema = client.get("/v1/dsr/schemas/export-bundle.json")
    assert schema.status_code == 200 and schema.get_json()["$id"] == manifest["schema"]
    assert_problem(client.get(url), 410, "gone")  # works once
    assert_problem(client.get(url[:-3] + "abc"), 410, "gone")
    letter = client.get(f"/v1/dsr/requests/{request_id}/letters/completed", headers=keys["app"]).get_json()
    assert letter["language"] == "zh" and "监管机构" in letter["body"]
    actions = [row.action for row in audit_rows(database)]
    for action in (
        "dsr.received",
        "dsr.verification_failed",
        "dsr.verified",
        "dsr.in_progress",
        "dsr.completed",
        "data.exported",
    ):
        assert action in actions, action
    for row in audit_rows(database):  # counts and pseudonymous ids only
        assert EMAIL not in (row.details or "") and "李" not in (row.details or "")


def test_portability_exports_only_provided_and_observed_data(client, keys) -> None:
    subject = make_subject(client, keys)
    request_id = create(client, keys, subject, "portability")["request_id"]
    assert (
        client.get(f"/v1/dsr/requests/{request_id}", headers=keys["app"]).get_json()["verification"]["level"] == "high"
    )
    not_enough = verify(client, keys, request_id)  # two points, no declaration: not enough for "high"
    assert not_enough["status"] == "pending_verification"
    points = [
        {"kind": "email", "value": EMAIL},
        {"kind": "phone", "value": PHONE},
        {"kind": "crm_id", "value": "C-77", "system": "crm"},
    ]
    assert verify(client, keys, request_id, points=points, declaration=True)["status"] == "verified"
    download = client.get(fulfil(client, keys, request_id)["download"]["url"])
    archive = zipfile.ZipFile(io.BytesIO(download.data))
    fields = {r["fields"]["field"] for r in json.loads(archive.read("data/vault.json"))["records"]}
    assert "email" in fields and "loyalty_tier" not in fields  # derived data is not portable
    assert json.loads(archive.read("data/audit.json"))["records"] == []  # the controller's own records neither


def test_status_machine_rejects_illegal_transitions_and_denials_carry_reasons(client, keys) -> None:
    subject = make_subject(client, keys, jurisdictions=("pipl",))
    request_id = create(client, keys, subject, "erasure")["request_id"]
    officer = keys["compliance_officer"]
    bad_reason = client.post(
        f"/v1/dsr/requests/{request_id}:deny", json={"reason": "bored", "legal_basis": "x"}, headers=officer
    )
    assert_problem(bad_reason, 422, "validation-error")
    denied = client.post(
        f"/v1/dsr/requests/{request_id}:deny",
        json={"reason": "insuf_verification", "legal_basis": "PIPL-50", "note": "no reply to two requests"},
        headers=officer,
    )
    assert denied.status_code == 200 and denied.get_json()["status"] == "denied"
    again = client.post(f"/v1/dsr/requests/{request_id}:cancel", json={}, headers=keys["app"])
    body = assert_problem(again, 409, "conflict")
    assert body["reason"] == "illegal_transition" and body["current_status"] == "denied"
    letter = client.get(f"/v1/dsr/requests/{request_id}/letters/denied?language=zh", headers=officer).get_json()
    assert "无法核实您的身份" in letter["body"] and "PIPL-50" in letter["body"] and "12377" in letter["body"]
    english = client.get(f"/v1/dsr/requests/{request_id}/letters/denied?language=en", headers=officer).get_json()
    assert "could not confirm your identity" in english["body"]
    assert_problem(client.get(f"/v1/dsr/requests/{request_id}/letters/completed", headers=officer), 409, "conflict")
    events = client.get(f"/v1/dsr/requests/{request_id}/events", headers=officer).get_json()["items"]
    assert [e["to_status"] for e in events if e["kind"] == "status"] == ["pending_verification", "denied"]


def test_opt_outs_skip_verification_and_record_the_opt_out(client, keys) -> None:
    subject = make_subject(client, keys, jurisdictions=("ccpa",))
    created = create(client, keys, subject, "opt_out_sale_share")
    assert created["status"] == "verified" and created["verification"]["outcome"] == "not_required"
    assert created["deadlines"]["ack_due_at"] is None
    result = fulfil(client, keys, created["request_id"])
    assert result["request"]["status"] == "completed"
    states = client.get(f"/v1/subjects/{subject}/consents", headers=keys["app"]).get_json()["consents"]
    assert {"purpose": "third_party_sharing.sale_share", "status": "refused"}.items() <= next(
        s for s in states if s["purpose"] == "third_party_sharing.sale_share"
    ).items()


def test_duplicates_and_bad_input_are_refused_clearly(client, keys) -> None:
    subject = make_subject(client, keys)
    first = create(client, keys, subject, "access")
    duplicate = client.post(
        "/v1/dsr/requests",
        json={"type": "access", "subject": {"subject_id": subject}, "channel": "web"},
        headers=keys["app"],
    )
    body = assert_problem(duplicate, 409, "conflict")
    assert body["existing_request_id"] == first["request_id"]
    allowed = create(client, keys, subject, "access", allow_duplicate=True)
    assert allowed["repeat_count"] == 1
    relative = client.post(
        "/v1/dsr/requests",
        json={
            "type": "access",
            "subject": {"subject_id": subject},
            "channel": "web",
            "requester": {"kind": "close_relative", "evidence": "death certificate ref 2025/77"},
        },
        headers=keys["app"],
    )
    assert "PIPL Art 49" in json.dumps(assert_problem(relative, 422, "validation-error"))
    agent = client.post(
        "/v1/dsr/requests",
        json={
            "type": "erasure",
            "subject": {"subject_id": subject},
            "channel": "web",
            "requester": {"kind": "authorized_agent"},
        },
        headers=keys["app"],
    )
    assert_problem(agent, 422, "validation-error")
    assert_problem(
        client.post("/v1/dsr/requests", json={"type": "nope", "channel": "web"}, headers=keys["app"]),
        422,
        "validation-error",
    )
    assert_problem(client.get("/v1/dsr/requests/dsr_0000000000000000", headers=keys["app"]), 404, "not-found")
    note = client.post(
        f"/v1/dsr/requests/{first['request_id']}/notes",
        json={"text": "call back on 13812345678"},
        headers=keys["compliance_officer"],
    )
    assert_problem(note, 422, "validation-error")
    assert_problem(
        client.post(f"/v1/dsr/requests/{first['request_id']}:fulfil", json={}, headers=keys["app"]), 403, "forbidden"
    )
    unknown = client.post(
        "/v1/dsr/requests",
        json={"type": "access", "subject": {"kind": "email", "value": "nobody@example.com"}, "channel": "web"},
        headers=keys["app"],
    )
    assert_problem(unknown, 422, "validation-error")  # no subject and no jurisdiction named
    stranger = client.post(
        "/v1/dsr/requests",
        json={
            "type": "access",
            "subject": {"kind": "email", "value": "nobody@example.com"},
            "channel": "web",
            "jurisdictions": ["gdpr"],
        },
        headers=keys["app"],
    )
    assert stranger.status_code == 201 and stranger.get_json()["subject_id"] is None
    assert_problem(
        client.post(
            f"/v1/dsr/requests/{stranger.get_json()['request_id']}/verification",
            json={"method": "data_points", "data_points": [{"kind": "email", "value": "a@b.cn"}]},
            headers=keys["app"],
        ),
        409,
        "conflict",
    )


def test_erasure_reaches_every_store_and_a_flaky_webhook_app(client, keys, app, webapp, database) -> None:
    app.extensions["govsvc.dsr"].registry.sleep = lambda seconds: None  # back-off without waiting
    registered = client.post(
        "/v1/dsr/connectors/webhooks",
        json={
            "name": "shop",
            "url": webapp.url,
            "operations": ["collect", "erase"],
            "identifier_kinds": ["crm_id", "email"],
        },
        headers=keys["dpo"],
    )
    assert registered.status_code == 201, registered.get_json()
    secret = registered.get_json()["secret"].encode()
    subject = make_subject(client, keys)
    request_id = create(client, keys, subject, "erasure")["request_id"]
    verify(client, keys, request_id)
    webapp.fail_first = 2
    result = fulfil(client, keys, request_id)
    assert result["request"]["status"] == "completed", result
    runs = {(r["connector"], r["operation"]): r for r in result["request"]["connectors"]}
    assert runs[("webhook:shop", "erase")]["attempts"] == 3 and runs[("webhook:shop", "erase")]["status"] == "done"
    assert runs[("vault", "erase")]["status"] == "done" and runs[("consent", "erase")]["status"] == "done"
    call = webapp.calls[-1]
    assert call["body"]["operation"] == "erase"
    assert verify_signature(secret, call["raw"], call["headers"]["X-Govsvc-Signature"])
    assert not verify_signature(b"wrong", call["raw"], call["headers"]["X-Govsvc-Signature"])
    assert {i["kind"] for i in call["body"]["subject"]["identifiers"]} == {"crm_id", "email"}
    assert len({c["headers"]["X-Govsvc-Delivery"] for c in webapp.calls}) == 1  # one delivery id across retries
    read = client.get(f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=keys["app"])
    assert read.status_code == 410  # crypto-shredded
    states = client.get(f"/v1/subjects/{subject}/consents", headers=keys["app"]).get_json()["consents"]
    assert all(s["status"] != "given" for s in states)
    connectors = client.get("/v1/dsr/connectors", headers=keys["dpo"]).get_json()["items"]
    shop = next(c for c in connectors if c["name"] == "webhook:shop")
    assert shop["healthy"] and shop["last_success_at"]
    assert "key.destroyed" in [row.action for row in audit_rows(database)]


def test_a_failing_webhook_leaves_the_request_open_until_retried(client, keys, app, webapp) -> None:
    app.extensions["govsvc.dsr"].registry.sleep = lambda seconds: None
    client.post(
        "/v1/dsr/connectors/webhooks",
        json={"name": "crm", "url": webapp.url, "operations": ["collect"], "max_attempts": 2},
        headers=keys["dpo"],
    )
    subject = make_subject(client, keys)
    request_id = create(client, keys, subject, "access")["request_id"]
    verify(client, keys, request_id)
    webapp.fail_first = 2
    failed = fulfil(client, keys, request_id)
    assert (
        failed["request"]["status"] == "in_progress"
        and failed["failed"] == ["webhook:crm"]
        and failed["download"] is None
    )
    done = fulfil(client, keys, request_id)
    assert done["request"]["status"] == "completed"
    archive = zipfile.ZipFile(io.BytesIO(client.get(done["download"]["url"]).data))
    orders = json.loads(archive.read("data/webhook_crm.json"))["records"]
    assert [o["record_id"] for o in orders] == ["o0", "o1", "o2", "o3", "o4"]  # two pages
    assert "茶叶 4" in archive.read("data/webhook_crm.csv").decode("utf-8-sig")


def test_erasure_under_legal_hold_keeps_everything_restricted(client, keys, database) -> None:
    subject = make_subject(client, keys)
    engine = create_engine(database.url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE subjects SET legal_hold = :on WHERE subject_id = :s"), {"on": True, "s": subject}
        )
    engine.dispose()
    request_id = create(client, keys, subject, "erasure", language="en")["request_id"]
    verify(client, keys, request_id)
    result = fulfil(client, keys, request_id)
    assert result["request"]["status"] == "partially_completed"
    kept = result["request"]["outcome"]["kept"]
    assert kept[0]["reason_code"] == "legal_hold" and "GDPR-17(3)(e)" in kept[0]["legal_basis"]
    assert client.get(f"/v1/subjects/{subject}", headers=keys["app"]).get_json()["restricted"] is True
    letter = client.get(f"/v1/dsr/requests/{request_id}/letters/partially_completed", headers=keys["app"]).get_json()
    assert (
        "legal hold" in letter["body"]
        and "supervisory authority" in letter["body"]
        and "seek redress" in letter["body"]
    )


def test_erasure_keeps_what_legal_retention_requires_and_deletes_the_rest(client, keys, database) -> None:
    subject = make_subject(
        client, keys, jurisdictions=("pipl",), profile={**PROFILE, "bank_card": "6222021234567890128"}
    )
    request_id = create(client, keys, subject, "erasure")["request_id"]
    verify(client, keys, request_id)
    result = fulfil(client, keys, request_id)
    assert result["request"]["status"] == "partially_completed"
    vault = next(r for r in result["request"]["outcome"]["runs"] if r["connector"] == "vault")
    assert vault["counts"]["fields_kept"] == 1 and vault["kept"][0]["fields"] == ["bank_card"]
    engine = create_engine(database.url)
    with engine.connect() as connection:
        fields = [row[0] for row in connection.execute(text("SELECT field FROM vault_fields"))]
        kinds = [row[0] for row in connection.execute(text("SELECT kind FROM subject_identifiers"))]
    engine.dispose()
    assert fields == ["bank_card"] and kinds == ["crm_id"]


def test_a_partial_erasure_is_done_again_when_a_backup_is_restored(app, client, keys, database) -> None:
    """The erasure kept the bank card (legal retention) and wrote a tombstone naming the fields it erased; after
    the old rows come back from a backup, replaying the ledger erases them again and keeps the card."""
    from govsvc.subjects.models import SubjectIdentifier
    from govsvc.vault.models import VaultField

    subject = make_subject(
        client, keys, jurisdictions=("pipl",), profile={**PROFILE, "bank_card": "6222021234567890128"}
    )
    engine = create_engine(database.url)
    with engine.connect() as connection:  # the backup
        backup = {
            table: [dict(row._mapping) for row in connection.execute(select(table))]
            for table in (VaultField.__table__, SubjectIdentifier.__table__)
        }
    request_id = create(client, keys, subject, "erasure")["request_id"]
    verify(client, keys, request_id)
    assert fulfil(client, keys, request_id)["request"]["status"] == "partially_completed"
    ledger = client.get("/v1/retention/ledger?store=vault", headers=keys["dpo"]).get_json()["items"]
    assert [(t["subject_key"], t["action"], t["run_id"]) for t in ledger] == [
        (subject, "erase_fields", f"dsr:{request_id}")
    ]
    assert ledger[0]["detail"] == {"fields": sorted(PROFILE)}  # names only, never values

    with engine.begin() as connection:  # the restore brings back every row the erasure removed
        for table, rows in backup.items():
            present = set(connection.execute(select(table.c.pk)).scalars())
            connection.execute(table.insert(), [row for row in rows if row["pk"] not in present])
        assert connection.execute(text("SELECT count(*) FROM vault_fields")).scalar() == len(PROFILE) + 1
    replayed = app.test_cli_runner().invoke(args=["retention", "replay-ledger", "--store", "vault"])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.output)["vault"] == {"fields_deleted": len(PROFILE), "identifiers_removed": 2}
    with engine.connect() as connection:
        fields = [row[0] for row in connection.execute(text("SELECT field FROM vault_fields"))]
        kinds = [row[0] for row in connection.execute(text("SELECT kind FROM subject_identifiers"))]
    engine.dispose()
    assert fields == ["bank_card"] and kinds == ["crm_id"]


def test_rectification_and_restriction(client, keys, database) -> None:
    subject = make_subject(client, keys)
    request_id = create(client, keys, subject, "rectification", fields=["name"])["request_id"]
    verify(client, keys, request_id)
    missing = client.post(f"/v1/dsr/requests/{request_id}:fulfil", json={}, headers=keys["compliance_officer"])
    assert_problem(missing, 422, "validation-error")
    assert fulfil(client, keys, request_id, fields={"name": "李蕾"})["request"]["status"] == "completed"
    history = client.get(
        f"/v1/vault/subjects/{subject}/profile/history?justification=ticket DSR-1234 check", headers=keys["dpo"]
    )
    assert [e["value"] for e in history.get_json()["entries"] if e["field"] == "name"] == ["李雷", "李磊"]
    restriction = create(client, keys, subject, "restriction")["request_id"]
    verify(client, keys, restriction)
    fulfil(client, keys, restriction)
    decision = client.post(
        "/v1/decisions",
        json={"subject": {"subject_id": subject}, "action": "use", "purpose": "essential.service", "fields": ["name"]},
        headers=keys["app"],
    )
    assert decision.get_json()["decision"] == "deny"
    assert "restricted" in [r["code"] for r in decision.get_json()["reasons"]]


def test_clock_pauses_extensions_and_overdue_detection(client, keys, app, database) -> None:
    gdpr_subject = make_subject(client, keys)
    request = create(client, keys, gdpr_subject, "access")
    request_id, due = request["request_id"], request["deadlines"]["due_at"]
    officer = keys["compliance_officer"]
    paused = client.post(f"/v1/dsr/requests/{request_id}:pause", json={"reason": "awaiting_identity"}, headers=officer)
    assert paused.status_code == 200 and paused.get_json()["paused"] is True
    assert_problem(
        client.post(f"/v1/dsr/requests/{request_id}:pause", json={"reason": "awaiting_identity"}, headers=officer),
        409,
        "conflict",
    )
    assert client.post(f"/v1/dsr/requests/{request_id}:resume", headers=officer).get_json()["paused"] is False
    extended = client.post(
        f"/v1/dsr/requests/{request_id}:extend", json={"reason": "many systems to search"}, headers=officer
    )
    assert extended.status_code == 200 and extended.get_json()["deadlines"]["due_at"] > due
    assert (
        client.get(f"/v1/dsr/requests/{request_id}/letters/extension", headers=officer)
        .get_json()["body"]
        .count("many systems")
        == 1
    )
    assert_problem(
        client.post(f"/v1/dsr/requests/{request_id}:extend", json={"reason": "again"}, headers=officer), 409, "conflict"
    )
    ccpa_subject_body = {"identifiers": [{"kind": "email", "value": "ca@example.com"}], "jurisdictions": ["ccpa"]}
    ccpa_subject = client.post("/v1/subjects", json=ccpa_subject_body, headers=keys["app"]).get_json()["subject_id"]
    ccpa_request = create(client, keys, ccpa_subject, "erasure")["request_id"]
    body = assert_problem(
        client.post(f"/v1/dsr/requests/{ccpa_request}:pause", json={"reason": "awaiting_identity"}, headers=officer),
        409,
        "conflict",
    )
    assert body["reason"] == "pause_not_allowed" and body["regimes"] == ["ccpa"]
    engine = create_engine(database.url)
    with engine.begin() as connection:
        connection.execute(update(DsrRequest).values(due_at=utcnow() - timedelta(hours=1)))
        connection.execute(
            update(DsrRequest)
            .where(DsrRequest.ack_due_at.is_not(None))
            .values(ack_due_at=utcnow() - timedelta(hours=1))
        )
    engine.dispose()
    runner = app.test_cli_runner()
    first = runner.invoke(args=["dsr", "check-overdue"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["overdue"] == 2 and json.loads(first.output)["ack_overdue"] == 1
    second = runner.invoke(args=["dsr", "check-overdue"])
    assert json.loads(second.output)["overdue"] == 0
    overdue_events = [row for row in audit_rows(database) if row.action == "dsr.overdue"]
    assert sorted(row.object_ref for row in overdue_events) == sorted([f"dsr:{request_id}", f"dsr:{ccpa_request}"])
    listed = client.get("/v1/dsr/requests?overdue=true", headers=officer).get_json()["items"]
    assert {item["request_id"] for item in listed} == {request_id, ccpa_request}
    assert all(item["sla"]["overdue"] for item in listed)


def test_opendsr_facade_create_status_cancel_and_signed_callbacks(client, keys, app, webapp) -> None:
    subject = make_subject(client, keys)
    discovery = client.get("/opendsr/v2/discovery")
    assert discovery.status_code == 200 and "erasure" in discovery.get_json()["supported_subject_request_types"]
    certificate = client.get("/opendsr/v2/processor-certificate.pem").get_data(as_text=True)
    assert certificate.startswith("-----BEGIN CERTIFICATE-----")
    body = {
        "subject_request_id": "a7551968-d5d6-44b2-9831-815ac9017798",
        "subject_request_type": "erasure",
        "submitted_time": "2025-10-02T15:00:00Z",
        "subject_identities": [{"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}],
        "api_version": "2.0",
        "status_callback_urls": [webapp.url],
    }
    created = client.post("/opendsr/v2/requests", json=body, headers=keys["app"])
    assert created.status_code == 201, created.get_json()
    document = created.get_json()
    assert opendsr.verify(certificate, document["encoded_request"].encode(), document["processor_signature"])
    status = client.get(f"/opendsr/v2/requests/{body['subject_request_id']}", headers=keys["app"]).get_json()
    assert status["request_status"] == "pending"
    bad = client.post(
        "/opendsr/v2/requests", json={**body, "subject_request_type": "rectification"}, headers=keys["app"]
    )
    assert bad.status_code == 400 and bad.get_json()["error"]["errors"][0]["reason"] == "invalid_subject_request_type"
    cancelled = client.delete(f"/opendsr/v2/requests/{body['subject_request_id']}", headers=keys["app"])
    assert cancelled.status_code == 202
    assert client.delete(f"/opendsr/v2/requests/{body['subject_request_id']}", headers=keys["app"]).status_code == 400
    runner = app.test_cli_runner()
    result = json.loads(runner.invoke(args=["dsr", "check-overdue"]).output)
    assert result["callbacks_delivered"] == 2  # pending (created) and cancelled
    statuses = [call["body"]["request_status"] for call in webapp.calls]
    assert statuses == ["pending", "cancelled"]
    for call in webapp.calls:
        assert opendsr.verify(certificate, call["raw"], call["headers"]["X-Opendsr-Signature"])
        assert call["body"]["status_callback_url"] == webapp.url
    assert subject


def test_requests_are_assigned_to_enabled_users_whose_role_may_work_them(app, client, keys, database) -> None:
    from govsvc.auth.models import AdminUser
    from tests.support.admin import create_user

    for username, role in [("ann", "compliance_officer"), ("li.dpo", "dpo"), ("viewer", "auditor"), ("gone", "dpo")]:
        create_user(app, username, role)
    with app.extensions["govsvc.db"].transaction() as session:
        session.execute(update(AdminUser).where(AdminUser.username == "gone").values(disabled_at=utcnow()))
    request_id = create(client, keys, make_subject(client, keys), "access")["request_id"]
    path = f"/v1/dsr/requests/{request_id}"

    assigned = client.patch(path, json={"assignee": "li.dpo"}, headers=keys["dpo"])
    assert assigned.status_code == 200 and assigned.get_json()["assignee"] == "li.dpo"
    for refused in ("viewer", "gone", "nobody"):  # a role without dsr:manage, a disabled user, no such user
        body = assert_problem(
            client.patch(path, json={"assignee": refused}, headers=keys["dpo"]), 422, "validation-error"
        )
        assert body["errors"][0]["field"] == "assignee"
        assert body["errors"][0]["known"] == ["ann", "li.dpo"], body
    assert client.get(path, headers=keys["dpo"]).get_json()["assignee"] == "li.dpo"  # unchanged by the refusals
    unassigned = client.patch(path, json={"assignee": None}, headers=keys["dpo"])
    assert unassigned.status_code == 200 and unassigned.get_json()["assignee"] is None
    with app.extensions["govsvc.db"].transaction() as session:
        details = session.scalars(
            select(AuditEvent.details).where(AuditEvent.action == "dsr.assigned").order_by(AuditEvent.id)
        ).all()
    assert [json.loads(detail) for detail in details] == [{"assignee": "li.dpo"}, {"assignee": None}]
