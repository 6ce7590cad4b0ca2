"""Legal holds and the DSR wiring of issue 8 (phase 2) over HTTP, on SQLite and PostgreSQL: holds drive the
subject's legal_hold flag (and so decisions), keep data from purges and erasures, and their release re-runs the
erasures they kept back; retention rules over the vault; subject events; SQL sources as DSR connectors."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from govsvc.core.db import utcnow
from govsvc.retention.models import DeletionTombstone
from tests.support.asserts import assert_problem
from tests.support.sources import source_body

PROFILE = {
    "name": "Li Lei",
    "email": "li.lei@example.cn",
    "mobile": "+8613812345678",
    "bank_card": "6222021234567890128",
}


@pytest.fixture
def keys(auth_headers) -> dict[str, dict[str, str]]:
    roles = ("app", "dpo", "compliance_officer", "legal", "auditor", "admin")
    return {role: auth_headers(role) for role in roles}


def make_subject(client, keys, crm_id: str, *, profile: dict[str, str] | None = None) -> str:
    response = client.post(
        "/v1/subjects",
        json={
            "identifiers": [
                {"kind": "crm_id", "value": crm_id, "system": "crm"},
                {"kind": "email", "value": f"{crm_id}@example.cn"},
            ],
            "jurisdictions": ["gdpr"],
        },
        headers=keys["app"],
    )
    assert response.status_code == 201, response.get_json()
    subject = response.get_json()["subject_id"]
    if profile:
        put = client.put(f"/v1/vault/subjects/{subject}/profile", json={"fields": profile}, headers=keys["app"])
        assert put.status_code == 200, put.get_json()
    return subject


def place_hold(client, keys, **body: Any) -> dict[str, Any]:
    body = {"basis": "litigation 2026-17", "owner": "legal team", "review_at": "2027-06-30", **body}
    response = client.post("/v1/holds", json=body, headers=keys["legal"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def decide(client, keys, subject: str) -> dict[str, Any]:
    body = {"subject": {"subject_id": subject}, "action": "read", "purpose": "essential.service", "fields": ["email"]}
    response = client.post("/v1/decisions", json=body, headers=keys["app"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def erase(client, keys, subject: str) -> dict[str, Any]:
    created = client.post(
        "/v1/dsr/requests",
        json={"type": "erasure", "subject": {"subject_id": subject}, "channel": "web"},
        headers=keys["app"],
    ).get_json()
    request_id = created["request_id"]
    verified = client.post(
        f"/v1/dsr/requests/{request_id}/verification",
        json={"method": "account_reauth", "passed": True, "evidence": "session reauth 42"},
        headers=keys["app"],
    )
    assert verified.status_code == 200, verified.get_json()
    done = client.post(f"/v1/dsr/requests/{request_id}:fulfil", json={}, headers=keys["compliance_officer"])
    assert done.status_code == 200, done.get_json()
    return done.get_json()


def age_profile(database, subject: str, days: int) -> None:
    engine = create_engine(database.url)
    old = utcnow() - timedelta(days=days)
    if database.backend == "sqlite":
        old = old.replace(tzinfo=None)
    with engine.begin() as connection:
        pk = connection.execute(text("SELECT pk FROM subjects WHERE subject_id = :s"), {"s": subject}).scalar_one()
        connection.execute(
            text("UPDATE subjects SET updated_at = :t, created_at = :t WHERE pk = :p"), {"t": old, "p": pk}
        )
        connection.execute(text("UPDATE vault_fields SET updated_at = :t WHERE subject_pk = :p"), {"t": old, "p": pk})
    engine.dispose()


def put_rules(client, keys, document: str) -> None:
    response = client.put("/v1/retention/policy", json={"document": document}, headers=keys["dpo"])
    assert response.status_code == 200, response.get_json()


def test_holds_set_the_flag_that_decisions_deny_and_release_clears_it(client, keys, database) -> None:
    subject = make_subject(client, keys, "C-1")
    assert decide(client, keys, subject)["decision"] == "allow"
    first = place_hold(client, keys, scope="subject", subject={"kind": "crm_id", "value": "C-1", "system": "crm"})
    second = place_hold(client, keys, scope="subject", subject={"subject_id": subject}, categories=["user.financial"])
    assert first["status"] == "active" and first["subject_id"] == subject
    assert client.get(f"/v1/subjects/{subject}", headers=keys["dpo"]).get_json()["legal_hold"] is True
    assert {r["code"] for r in decide(client, keys, subject)["reasons"]} == {"legal_hold"}
    released = client.post(f"/v1/holds/{first['hold_id']}:release", headers=keys["legal"])
    assert released.status_code == 200 and released.get_json()["status"] == "released"
    assert client.get(f"/v1/subjects/{subject}", headers=keys["dpo"]).get_json()["legal_hold"] is True  # one left
    client.post(f"/v1/holds/{second['hold_id']}:release", headers=keys["dpo"])
    assert client.get(f"/v1/subjects/{subject}", headers=keys["dpo"]).get_json()["legal_hold"] is False
    assert decide(client, keys, subject)["decision"] == "allow"
    assert_problem(client.post(f"/v1/holds/{first['hold_id']}:release", headers=keys["legal"]), 409, "conflict")
    listed = client.get("/v1/holds?status=released", headers=keys["auditor"]).get_json()["items"]
    assert [h["hold_id"] for h in listed] == [second["hold_id"], first["hold_id"]]
    assert_problem(client.get("/v1/holds/hold_nope", headers=keys["legal"]), 404, "not-found")
    no_subject = client.post(
        "/v1/holds",
        json={"scope": "subject", "basis": "case", "owner": "x", "review_at": "2027-01-01"},
        headers=keys["legal"],
    )
    assert_problem(no_subject, 422, "validation-error")
    no_dataset = client.post(
        "/v1/holds",
        json={"scope": "dataset", "basis": "case", "owner": "x", "review_at": "2027-01-01"},
        headers=keys["legal"],
    )
    assert_problem(no_dataset, 422, "validation-error")
    assert_problem(
        client.post(
            "/v1/holds",
            json={"scope": "category", "categories": ["user"], "basis": "c", "owner": "x", "review_at": "2027-01-01"},
            headers=keys["app"],
        ),
        403,
        "forbidden",
    )


def test_a_category_hold_denies_decisions_on_that_category_for_every_subject(client, keys, database) -> None:
    subject = make_subject(client, keys, "C-7")
    name_only = {"subject": {"subject_id": subject}, "action": "read", "purpose": "essential.service"}
    assert decide(client, keys, subject)["decision"] == "allow"
    hold = place_hold(client, keys, scope="category", categories=["user.contact"])
    denied = decide(client, keys, subject)  # the e-mail field is user.contact.email, inside the held category
    assert denied["decision"] == "deny"
    assert [(r["code"], r.get("category")) for r in denied["reasons"]] == [("legal_hold", "user.contact.email")]
    other = client.post("/v1/decisions", json={**name_only, "data_categories": ["user.name"]}, headers=keys["app"])
    assert other.get_json()["decision"] == "allow"  # categories outside the hold are not held
    assert client.get(f"/v1/subjects/{subject}", headers=keys["dpo"]).get_json()["legal_hold"] is False
    unknown = client.post(
        "/v1/holds",
        json={"scope": "category", "categories": ["龙卡"], "basis": "case", "owner": "x", "review_at": "2027-01-01"},
        headers=keys["legal"],
    )
    assert_problem(unknown, 422, "validation-error")  # found by the fuzzer: it was a 500
    client.post(f"/v1/holds/{hold['hold_id']}:release", headers=keys["legal"])
    assert decide(client, keys, subject)["decision"] == "allow"  # the very next decision


def test_a_released_hold_reruns_the_erasure_it_kept_back(client, keys, external_db, database) -> None:
    external_db.add_orders([(1, "C-9", 10), (2, "C-9", 20), (3, "C-8", 10)])
    assert client.post("/v1/sources", json=source_body(external_db), headers=keys["dpo"]).status_code == 201
    subject = make_subject(client, keys, "C-9", profile=PROFILE)
    held = place_hold(client, keys, scope="subject", subject={"subject_id": subject})
    result = erase(client, keys, subject)
    assert result["request"]["status"] == "partially_completed"
    kept = result["request"]["outcome"]["kept"]
    assert {k["reason_code"] for k in kept} == {"legal_hold"} and any(k["source"].startswith("hold:") for k in kept)
    assert external_db.count(where="customer_id = 'C-9'") == 2  # kept
    profile = client.get(f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=keys["dpo"])
    assert profile.status_code == 200
    released = client.post(f"/v1/holds/{held['hold_id']}:release", headers=keys["legal"]).get_json()
    assert released["erasures_rerun"] == [result["request"]["request_id"]]
    assert external_db.count(where="customer_id = 'C-9'") == 0 and external_db.count() == 1
    gone = client.get(f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=keys["dpo"])
    assert gone.status_code in (404, 410)
    engine = create_engine(database.url)
    with engine.connect() as connection:
        stores = sorted(row.store for row in connection.execute(select(DeletionTombstone)))
        events = [r[0] for r in connection.execute(text("SELECT action FROM audit_events"))]
    engine.dispose()
    assert stores == ["source:crm_orders", "vault"]
    assert "dsr.erasure_rerun" in events and "hold.released" in events and "hold.created" in events


def test_dsr_access_and_erasure_reach_the_sql_sources(client, keys, external_db, database) -> None:
    external_db.add_orders([(1, "C-5", 10), (2, "C-5", 900), (3, "C-6", 10)])
    assert client.post("/v1/sources", json=source_body(external_db), headers=keys["dpo"]).status_code == 201
    subject = make_subject(client, keys, "C-5", profile={"name": "Han Meimei"})
    created = client.post(
        "/v1/dsr/requests",
        json={"type": "access", "subject": {"subject_id": subject}, "channel": "web"},
        headers=keys["app"],
    ).get_json()
    client.post(
        f"/v1/dsr/requests/{created['request_id']}/verification",
        json={"method": "account_reauth", "passed": True, "evidence": "session reauth 42"},
        headers=keys["app"],
    )
    done = client.post(f"/v1/dsr/requests/{created['request_id']}:fulfil", json={}, headers=keys["compliance_officer"])
    assert done.status_code == 200, done.get_json()
    archive = zipfile.ZipFile(io.BytesIO(client.get(done.get_json()["download"]["url"]).data))
    rows = json.loads(archive.read("data/sql_crm_orders.json"))["records"]
    assert sorted(r["record_id"] for r in rows) == ["1", "2"]
    assert rows[0]["fields"]["email"] == "c-5@example.com" and "customer_id" not in rows[0]["fields"]
    connectors = client.get("/v1/dsr/connectors", headers=keys["dpo"])
    assert connectors.status_code == 200 and "sql_crm_orders" in connectors.get_data(as_text=True)
    result = erase(client, keys, subject)
    runs = {r["connector"]: r for r in result["request"]["outcome"]["runs"]}
    assert runs["sql_crm_orders"]["counts"]["rows_deleted"] == 2 and runs["ledger"]["status"] == "done"
    assert external_db.count() == 1


def test_vault_rules_shred_inactive_profiles_but_never_held_data(client, keys, database) -> None:
    inactive = make_subject(client, keys, "C-1", profile=PROFILE)
    held = make_subject(client, keys, "C-2", profile=PROFILE)
    recent = make_subject(client, keys, "C-3", profile=PROFILE)
    for subject in (inactive, held):
        age_profile(database, subject, 1200)
    place_hold(client, keys, scope="subject", subject={"subject_id": held}, categories=["user.financial"])
    preview = client.post("/v1/retention/rules/inactive_profiles:dry-run", headers=keys["dpo"]).get_json()
    assert preview["counts"]["rows"] == 1 and preview["samples"] == [inactive]
    assert preview["exclusions"] == {"legal_hold": 1}
    client.post(f"/v1/retention/runs/{preview['run_id']}:approve", headers=keys["dpo"])
    done = client.post(
        "/v1/retention/rules/inactive_profiles:execute", json={"dry_run_id": preview["run_id"]}, headers=keys["dpo"]
    ).get_json()
    assert done["counts"]["rows"] == 1
    shredded = client.get(f"/v1/vault/subjects/{inactive}/profile?purpose=essential.service", headers=keys["dpo"])
    assert_problem(shredded, 410, "key-destroyed")
    for subject in (held, recent):
        kept = client.get(f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=keys["dpo"])
        assert kept.status_code == 200
    # a dataset hold over the vault stops the rule entirely
    place_hold(client, keys, scope="dataset", dataset="vault")
    age_profile(database, recent, 1200)
    again = client.post("/v1/retention/rules/inactive_profiles:dry-run", headers=keys["dpo"]).get_json()
    assert again["counts"]["rows"] == 0 and again["exclusions"] == {"legal_hold": 2}


def test_account_cancellation_starts_the_clock_and_open_requests_wait(app, client, keys, database) -> None:
    put_rules(
        client,
        keys,
        """
require_approved_dry_run: false
rules:
  - key: cancelled_accounts
    store: vault
    trigger: contract_end
    period_days: 0
    action: delete
    categories: [user.contact, user.name]
    exceptions: [legal_hold, open_dsr]
""",
    )
    cancelled = make_subject(client, keys, "C-1", profile=PROFILE)
    waiting = make_subject(client, keys, "C-2", profile=PROFILE)
    untouched = make_subject(client, keys, "C-3", profile=PROFILE)
    for subject in (cancelled, waiting):
        event = client.post(
            "/v1/retention/events",
            json={"subject": {"subject_id": subject}, "event": "account_cancelled"},
            headers=keys["app"],
        )
        assert event.status_code == 201 and event.get_json()["rules"] == ["cancelled_accounts"]
    client.post(
        "/v1/dsr/requests",
        json={"type": "access", "subject": {"subject_id": waiting}, "channel": "web"},
        headers=keys["app"],
    )
    done = client.post("/v1/retention/rules/cancelled_accounts:execute", json={}, headers=keys["dpo"]).get_json()
    assert done["counts"]["rows"] == 1 and done["exclusions"] == {"open_dsr": 1}
    assert done["counts"]["by_category"] == {"user.contact.email": 1, "user.contact.phone_number": 1, "user.name": 1}
    engine = create_engine(database.url)
    with engine.connect() as connection:
        fields = {
            row[0]: row[1]
            for row in connection.execute(
                text(
                    "SELECT s.subject_id, count(*) FROM vault_fields f JOIN subjects s ON s.pk = f.subject_pk "
                    "GROUP BY s.subject_id"
                )
            )
        }
    engine.dispose()
    assert fields[cancelled] == 1 and fields[waiting] == 4 and fields[untouched] == 4  # bank_card stays
    # the profile comes back from a backup: replaying the ledger deletes the rule's categories again
    restored = client.put(f"/v1/vault/subjects/{cancelled}/profile", json={"fields": PROFILE}, headers=keys["app"])
    assert restored.status_code == 200
    replayed = app.test_cli_runner().invoke(args=["retention", "replay-ledger", "--store", "vault"])
    assert json.loads(replayed.output)["vault"] == {"fields_deleted": 3}
    bad = client.post(
        "/v1/retention/events", json={"subject": {"subject_id": cancelled}, "event": "birthday"}, headers=keys["app"]
    )
    assert_problem(bad, 422, "validation-error")


def test_cancellation_and_withdrawal_make_immediate_rules_due_at_once(app, client, keys, database) -> None:
    from govsvc.core.scheduler import JobControl
    from govsvc.retention.jobs import scheduled_run

    put_rules(
        client,
        keys,
        """
require_approved_dry_run: false
rules:
  - key: cancelled_accounts
    store: vault
    trigger: contract_end
    period_days: 0
    action: crypto_shred
    exceptions: [legal_hold, open_dsr]
    schedule: "0 5 1 1 *"
  - key: withdrawn_marketing
    store: vault
    trigger: consent_withdrawn
    period_days: 0
    action: delete
    categories: [user.contact]
    exceptions: [legal_hold]
    schedule: "0 6 1 1 *"
""",
    )
    subject = make_subject(client, keys, "C-1", profile=PROFILE)
    watch = app.extensions["govsvc.retention_events"]
    app.extensions["govsvc.retention_jobs"]()
    control = JobControl(app.extensions["govsvc.db"].engine, app.extensions["govsvc.jobs"])
    assert watch() == {"triggered": 0}  # notes where the streams are
    before = control.status("retention.cancelled_accounts").next_run_at
    assert before is not None and before - utcnow() > timedelta(hours=1)  # next 1 January
    event = client.post(
        "/v1/retention/events",
        json={"subject": {"subject_id": subject}, "event": "account_cancelled"},
        headers=keys["app"],
    )
    assert event.status_code == 201
    assert watch() == {"triggered": 1}
    due = control.status("retention.cancelled_accounts").next_run_at
    assert due is not None and due <= utcnow()  # due now: the next scheduler wake-up runs it
    assert watch() == {"triggered": 0}  # once per event
    notice = {"id": "privacy", "version": "3", "sha256": "a" * 64, "language": "en"}
    for act in ("given", "withdrawn"):
        body = {
            "subject": {"subject_id": subject},
            "event": act,
            "items": [{"purpose": "marketing.communications.email"}],
            "channel": "web",
        }
        if act == "given":
            body |= {"consent_type": "express", "notice": notice}
        assert client.post("/v1/consents", json=body, headers=keys["app"]).status_code == 201
    assert watch() == {"triggered": 1}
    assert control.status("retention.withdrawn_marketing").next_run_at <= utcnow()
    outcome = scheduled_run(app.extensions["govsvc.db"], app.extensions["govsvc.retention"], "cancelled_accounts")
    assert outcome["action"] == "executed"
    shredded = client.get(f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=keys["dpo"])
    assert_problem(shredded, 410, "key-destroyed")
