"""Retention over HTTP and through the engine, on SQLite and PostgreSQL: rules as policy, dry runs, approvals,
chunked purges of a real external SQL table, exclusions (legal holds, open DSRs, open contracts), minimum legal
retention, idempotency, crash-resume, the lease between instances, persistent scheduled jobs, the deletion ledger
and its replay after a restore."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, select, text

from govsvc.audit.models import AuditEvent
from govsvc.core.db import utcnow
from govsvc.core.scheduler import JobControl, Jobs
from govsvc.retention.jobs import job_name, scheduled_run
from govsvc.retention.models import DeletionTombstone, RetentionChunk, RetentionRun
from govsvc.retention.rules import Rule
from govsvc.retention.service import Interrupted
from govsvc.retention.targets import ConsentTarget, VaultTarget
from tests.support.asserts import assert_problem
from tests.support.plans import StatementCapture, fill, insert_consent_states, insert_subjects, only_postgresql
from tests.support.sources import ExternalDb, source_body

SOURCE_RULE = """
require_approved_dry_run: {approval}
rules:
  - key: old_orders
    store: source:crm_orders
    categories: ["*"]
    trigger: created_at
    period_days: 365
    action: {action}
    {profile}
    min_retention_days: {minimum}
    {legal_source}
    exceptions: [legal_hold, open_dsr, open_contract]
    schedule: "0 4 * * *"
"""


def source_rule(approval: bool = True, action: str = "delete", minimum: int = 0, profile: str | None = None) -> str:
    return SOURCE_RULE.format(
        approval="true" if approval else "false",
        action=action,
        minimum=minimum,
        profile=f"masking_profile: {profile}" if profile else "",
        legal_source='legal_source: "会计法 Art 23"' if minimum else "",
    )


@pytest.fixture
def keys(auth_headers) -> dict[str, dict[str, str]]:
    roles = ("app", "dpo", "compliance_officer", "legal", "auditor", "admin", "support_agent")
    return {role: auth_headers(role) for role in roles}


def put_rules(client, keys, document: str) -> dict[str, Any]:
    response = client.put("/v1/retention/policy", json={"document": document}, headers=keys["dpo"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def register_source(client, keys, db: ExternalDb, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/sources", json={**source_body(db), **overrides}, headers=keys["dpo"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def make_subject(client, keys, crm_id: str) -> str:
    response = client.post(
        "/v1/subjects",
        json={"identifiers": [{"kind": "crm_id", "value": crm_id, "system": "crm"}], "jurisdictions": ["pipl"]},
        headers=keys["app"],
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["subject_id"]


def hold(client, keys, subject: str, **extra: Any) -> dict[str, Any]:
    body = {
        "scope": "subject",
        "subject": {"subject_id": subject},
        "basis": "case 2026-17",
        "owner": "legal team",
        "review_at": "2027-06-30",
        **extra,
    }
    response = client.post("/v1/holds", json=body, headers=keys["legal"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def dry_run(client, keys, rule: str = "old_orders") -> dict[str, Any]:
    response = client.post(f"/v1/retention/rules/{rule}:dry-run", headers=keys["compliance_officer"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def approve(client, keys, run_id: str) -> None:
    response = client.post(f"/v1/retention/runs/{run_id}:approve", headers=keys["compliance_officer"])
    assert response.status_code == 200, response.get_json()


def execute(client, keys, rule: str = "old_orders", dry_run_id: str | None = None) -> dict[str, Any]:
    response = client.post(
        f"/v1/retention/rules/{rule}:execute", json={"dry_run_id": dry_run_id}, headers=keys["compliance_officer"]
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def db_rows(database, model) -> list:
    engine = create_engine(database.url)
    with engine.connect() as connection:
        rows = list(connection.execute(select(model)).all())
    engine.dispose()
    return rows


def seed_orders(db: ExternalDb) -> None:
    """C-1..C-5 each have 4 orders 400 days old (due) and 2 from last month (not due)."""
    rows = []
    key = 0
    for customer in ("C-1", "C-2", "C-3", "C-4", "C-5"):
        for age in (400, 401, 500, 800, 20, 30):
            key += 1
            rows.append((key, customer, age))
    db.add_orders(rows)


# -- the rules as policy -------------------------------------------------------------------------------------------


def test_rules_are_seeded_validated_versioned_and_audited(client, keys, database) -> None:
    current = client.get("/v1/retention/policy", headers=keys["auditor"])
    assert current.status_code == 200
    body = current.get_json()
    assert body["version"] == 1 and body["require_approved_dry_run"] is True
    assert {r["key"] for r in body["rules"]} >= {"inactive_profiles", "dsr_export_files", "expired_api_keys"}
    bad = client.put(
        "/v1/retention/policy",
        json={
            "document": "rules:\n  - key: x\n    store: nowhere\n    period_days: -1\n    trigger: birthday\n"
            "    action: anonymize\n    exceptions: [open_dsr]\n    schedule: 'every day'\n"
            "  - key: y\n    store: source:crm\n    trigger: created_at\n    period_days: 10\n    action: delete\n"
            "    min_retention_days: 30\n"
        },
        headers=keys["dpo"],
    )
    problem = assert_problem(bad, 422, "validation-error")
    fields = {e["field"] for e in problem["errors"]}
    assert {
        "rules[0].store",
        "rules[0].period_days",
        "rules[0].trigger",
        "rules[0].masking_profile",
        "rules[0].exceptions",
        "rules[0].schedule",
        "rules[1].legal_source",
    } <= fields
    not_yaml = client.put("/v1/retention/policy", json={"document": "rules: [unclosed"}, headers=keys["dpo"])
    assert_problem(not_yaml, 422, "validation-error")
    assert_problem(
        client.put("/v1/retention/policy", json={"document": "x"}, headers=keys["auditor"]), 403, "forbidden"
    )
    changed = put_rules(client, keys, source_rule())
    assert changed["version"] == 2 and [r["key"] for r in changed["rules"]] == ["old_orders"]
    stale = client.put(
        "/v1/retention/policy", json={"document": source_rule(), "base_digest": body["digest"]}, headers=keys["dpo"]
    )
    assert_problem(stale, 409, "conflict")
    versions = client.get("/v1/retention/policy/versions", headers=keys["dpo"]).get_json()["items"]
    assert [v["version"] for v in versions] == [2, 1]
    events = [
        e for e in db_rows(database, AuditEvent) if e.action == "config.changed" and e.object_ref == "policy:retention"
    ]
    assert len(events) == 2  # the seed and the change


# -- external sources ----------------------------------------------------------------------------------------------


def test_a_source_is_checked_and_its_url_never_shown(client, keys, external_db, database) -> None:
    missing = client.post("/v1/sources", json={**source_body(external_db), "table": "nope"}, headers=keys["dpo"])
    assert_problem(missing, 422, "validation-error")
    bad_column = client.post(
        "/v1/sources",
        json={**source_body(external_db), "columns": {"phone": "user.contact.phone_number"}},
        headers=keys["dpo"],
    )
    assert "phone" in json.dumps(assert_problem(bad_column, 422, "validation-error")["errors"])
    mysql = client.post(
        "/v1/sources", json={**source_body(external_db), "url": "mysql://u:p@h/db"}, headers=keys["dpo"]
    )
    assert_problem(mysql, 422, "validation-error")
    created = register_source(client, keys, external_db)
    assert "url" not in created and created["store"] == "source:crm_orders"
    listed = client.get("/v1/sources", headers=keys["admin"]).get_data(as_text=True)
    assert external_db.url not in listed and "crm_orders" in listed
    engine = create_engine(database.url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT url_wrapped FROM external_sources")).scalar_one()
    engine.dispose()
    assert external_db.url.encode() not in bytes(stored)
    assert_problem(client.post("/v1/sources", json=source_body(external_db), headers=keys["dpo"]), 409, "conflict")
    assert_problem(client.post("/v1/sources", json=source_body(external_db), headers=keys["app"]), 403, "forbidden")


def test_dry_run_then_approved_purge_of_an_external_table_with_exclusions_and_idempotence(
    client, keys, external_db, database
) -> None:
    seed_orders(external_db)
    register_source(client, keys, external_db)
    put_rules(client, keys, source_rule())
    held = make_subject(client, keys, "C-1")
    hold(client, keys, held)
    open_request = make_subject(client, keys, "C-2")
    created = client.post(
        "/v1/dsr/requests",
        json={"type": "access", "subject": {"subject_id": open_request}, "channel": "web"},
        headers=keys["app"],
    )
    assert created.status_code == 201
    under_contract = make_subject(client, keys, "C-3")
    event = client.post(
        "/v1/retention/events",
        json={"subject": {"kind": "crm_id", "value": "C-3", "system": "crm"}, "event": "contract_started"},
        headers=keys["app"],
    )
    assert event.status_code == 201 and event.get_json()["subject_id"] == under_contract

    preview = dry_run(client, keys)
    assert preview["mode"] == "dry_run" and preview["status"] == "completed" and preview["policy_version"] == 2
    assert preview["counts"]["rows"] == 8 and preview["counts"]["subjects"] == 2  # C-4 and C-5
    assert preview["counts"]["by_category"]["user.financial"] == 8
    assert preview["exclusions"] == {"legal_hold": 4, "open_dsr": 4, "open_contract": 4}
    assert len(preview["samples"]) == 2 and all(s.startswith("psk_") for s in preview["samples"])
    assert "C-4" not in json.dumps(preview)
    assert external_db.count() == 30  # a dry run changes nothing

    assert execute_problem(client, keys, None)["reason"] == "dry_run_required"
    assert execute_problem(client, keys, preview["run_id"])["reason"] == "dry_run_not_approved"
    assert_problem(
        client.post(f"/v1/retention/runs/{preview['run_id']}:approve", headers=keys["auditor"]), 403, "forbidden"
    )
    approve(client, keys, preview["run_id"])
    done = execute(client, keys, dry_run_id=preview["run_id"])
    assert done["status"] == "completed" and done["counts"]["rows"] == 8 and done["dry_run_id"] == preview["run_id"]
    assert external_db.count() == 22
    assert external_db.count(where="customer_id IN ('C-4', 'C-5')") == 4  # last month's orders stay
    assert external_db.count(where="customer_id = 'C-1'") == 6  # held
    assert execute_problem(client, keys, preview["run_id"])["reason"] == "dry_run_used"

    again = dry_run(client, keys)
    assert again["counts"]["rows"] == 0  # idempotent: nothing left to purge
    approve(client, keys, again["run_id"])
    assert execute(client, keys, dry_run_id=again["run_id"])["counts"]["rows"] == 0
    assert external_db.count() == 22

    tombstones = db_rows(database, DeletionTombstone)
    assert {t.store for t in tombstones} == {"source:crm_orders"}
    assert sorted(t.subject_key for t in tombstones) == sorted(preview["samples"])
    events = [e for e in db_rows(database, AuditEvent) if e.action.startswith("retention.")]
    assert [e.action for e in events].count("retention.purged") == 2
    assert [e.action for e in events].count("retention.dry_run") == 2
    assert "C-4" not in json.dumps([e.details for e in events], default=str)
    reports = client.get("/v1/retention/runs?rule=old_orders&mode=execute", headers=keys["legal"]).get_json()
    assert [r["counts"]["rows"] for r in reports["items"]] == [0, 8]


def execute_problem(client, keys, dry_run_id: str | None) -> dict[str, Any]:
    response = client.post(
        "/v1/retention/rules/old_orders:execute", json={"dry_run_id": dry_run_id}, headers=keys["compliance_officer"]
    )
    return assert_problem(response, 409, "conflict")


def test_anonymize_masks_the_rules_categories_and_forgets_the_subject_key(client, keys, external_db) -> None:
    seed_orders(external_db)
    register_source(client, keys, external_db)
    document = source_rule(approval=False, action="anonymize", profile="default").replace(
        'categories: ["*"]', "categories: [user.contact, user.crm]"
    )
    put_rules(client, keys, document)
    first = execute(client, keys)
    assert first["counts"]["rows"] == 20 and first["counts"]["by_category"] == {
        "user.contact.email": 20,
        "user.crm.customer_id": 20,
    }
    assert external_db.count() == 30
    assert external_db.count(where="customer_id LIKE 'anon_%'") == 20
    assert external_db.count(where="email LIKE 'c-%@example.com'") == 10  # only the recent rows keep theirs
    assert external_db.count(where="note LIKE 'order %'") == 30  # not in the rule's categories
    assert execute(client, keys)["counts"]["rows"] == 0  # idempotent


def test_minimum_legal_retention_restricts_instead_of_deleting(client, keys, external_db, database) -> None:
    seed_orders(external_db)
    register_source(client, keys, external_db)
    put_rules(client, keys, source_rule(approval=False, minimum=600))
    subject = make_subject(client, keys, "C-4")
    done = execute(client, keys)
    # ages 400, 401, 500 are past the period but inside the 600-day minimum: kept and restricted; 800 goes
    assert done["counts"]["rows"] == 5 and done["counts"]["restricted"] == 15
    assert external_db.count() == 25
    read = client.get(f"/v1/subjects/{subject}", headers=keys["dpo"]).get_json()
    assert read["restricted"] is True


# -- crash, resume, lease -----------------------------------------------------------------------------------------


def test_a_crash_after_a_chunk_is_deleted_resumes_without_counting_twice(
    app_factory, client, keys, external_db, database
) -> None:
    seed_orders(external_db)
    register_source(client, keys, external_db)
    put_rules(client, keys, source_rule(approval=False))
    app = app_factory(retention_chunk_size=3)
    retention, db = app.extensions["govsvc.retention"], app.extensions["govsvc.db"]

    def crash(step: str, seq: int) -> None:
        if step == "acted" and seq == 2:
            raise Interrupted("killed after the source committed chunk 2, before the bookkeeping")

    with pytest.raises(Interrupted):
        retention.execute(db, "old_orders", actor="test", fault=crash)
    assert external_db.count() == 30 - 6  # two chunks of 3 gone
    [crashed] = [r for r in db_rows(database, RetentionRun) if r.mode == "execute"]
    assert crashed.status == "running" and json.loads(crashed.counts)["rows"] == 3  # only chunk 1 was counted
    finished = retention.execute(db, "old_orders", actor="test")
    assert finished.run_id == crashed.run_id and finished.status == "completed"
    counts = json.loads(finished.counts)
    assert counts["rows"] == 20 and counts["by_category"]["user.financial"] == 20
    assert counts["subjects"] == 5  # C-1 was in the chunks before and after the crash: counted once
    assert external_db.count() == 10
    chunks = db_rows(database, RetentionChunk)
    assert sum(c.done for c in chunks) == 20 and all(c.status == "done" for c in chunks)
    assert retention.execute(db, "old_orders", actor="test").run_id != crashed.run_id  # a new, empty run
    assert external_db.count() == 10


def test_subjects_are_counted_once_across_a_crash(app_factory, client, keys, external_db, database) -> None:
    """Chunks of 4 hold one customer each; the crash comes after chunk 2 (C-2) was deleted at the source but before
    its bookkeeping: the resumed run still counts C-2, and C-1 (counted before the crash) once."""
    seed_orders(external_db)
    register_source(client, keys, external_db)
    put_rules(client, keys, source_rule(approval=False))
    app = app_factory(retention_chunk_size=4)
    retention, db = app.extensions["govsvc.retention"], app.extensions["govsvc.db"]

    def crash(step: str, seq: int) -> None:
        if step == "acted" and seq == 2:
            raise Interrupted("killed after the source committed chunk 2, before the bookkeeping")

    with pytest.raises(Interrupted):
        retention.execute(db, "old_orders", actor="test", fault=crash)
    finished = retention.execute(db, "old_orders", actor="test")
    counts = json.loads(finished.counts)
    assert counts["rows"] == 20 and counts["subjects"] == 5
    tombstones = [t for t in db_rows(database, DeletionTombstone) if t.run_id == finished.run_id]
    assert len(tombstones) == 5  # one per subject, none written twice by the resumed run


def test_two_instances_never_run_one_purge_at_once(app_factory, client, keys, external_db, database) -> None:
    seed_orders(external_db)
    register_source(client, keys, external_db)
    put_rules(client, keys, source_rule(approval=False))
    first, second = app_factory(retention_chunk_size=2), app_factory(retention_chunk_size=2)
    entered = threading.Event()

    def slow(step: str, seq: int) -> None:
        entered.set()
        time.sleep(0.05)

    results: list[Any] = []

    def run_first() -> None:
        results.append(
            first.extensions["govsvc.retention"].execute(
                first.extensions["govsvc.db"], "old_orders", actor="a", fault=slow
            )
        )

    thread = threading.Thread(target=run_first)
    thread.start()
    assert entered.wait(10)
    refused = second.test_client().post(
        "/v1/retention/rules/old_orders:execute", json={}, headers=keys["compliance_officer"]
    )
    thread.join(30)
    assert assert_problem(refused, 409, "conflict")["reason"] == "lease_held"
    assert results[0].status == "completed" and json.loads(results[0].counts)["rows"] == 20
    assert external_db.count() == 10


def test_two_schedulers_on_one_database_share_the_job_and_purge_once(
    app_factory, client, keys, external_db, database
) -> None:
    """Two instances' APScheduler schedulers with the persistent job store on one database: the job and its pause
    state are shared, both fire it, and the lease lets exactly one purge run."""
    seed_orders(external_db)
    register_source(client, keys, external_db)
    put_rules(client, keys, source_rule(approval=False))
    instances = [app_factory(retention_chunk_size=2) for _ in range(2)]
    outcomes: list[dict[str, Any]] = []
    lock = threading.Lock()
    schedulers = []
    for instance in instances:
        retention, db = instance.extensions["govsvc.retention"], instance.extensions["govsvc.db"]

        def job(retention=retention, db=db) -> None:
            original = retention.execute

            def slow_execute(*args: Any, **kwargs: Any) -> Any:
                return original(*args, **kwargs, fault=lambda step, seq: time.sleep(0.05))

            retention.execute = slow_execute  # type: ignore[method-assign]
            try:
                outcome = scheduled_run(db, retention, "old_orders")
            finally:
                retention.execute = original  # type: ignore[method-assign]
            with lock:
                outcomes.append(outcome)

        jobs = Jobs(db)
        jobs.add_cron(job_name("old_orders"), "0 4 * * *", job)
        schedulers.append(jobs)
    try:
        for jobs in schedulers:
            jobs.start()
        control = JobControl(instances[0].extensions["govsvc.db"].engine, schedulers[0])
        other = JobControl(instances[1].extensions["govsvc.db"].engine, schedulers[1])
        assert other.status(job_name("old_orders")).paused is False
        control.pause(job_name("old_orders"))
        assert other.status(job_name("old_orders")).paused is True  # one job row, shared
        other.resume(job_name("old_orders"))
        control.trigger(job_name("old_orders"))
        for jobs in schedulers:
            jobs.wakeup()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                if any(o["action"] == "executed" for o in outcomes) and external_db.count() == 10:
                    break
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        for jobs in schedulers:
            jobs.shutdown()
    executed = [o for o in outcomes if o["action"] == "executed"]
    skipped = [o for o in outcomes if o["action"] == "skipped"]
    runs = [r for r in db_rows(database, RetentionRun) if r.mode == "execute"]
    assert external_db.count() == 10
    assert sum(json.loads(r.counts)["rows"] for r in runs) == 20  # purged once, never twice
    assert [json.loads(r.counts)["rows"] for r in runs if json.loads(r.counts)["rows"]] == [20]
    assert all(o["reason"] == "lease_held" for o in skipped)
    assert len(executed) >= 1
    next_run = control.status(job_name("old_orders")).next_run_at
    assert next_run is not None and next_run.hour == 4  # back on its cron schedule


# -- scheduled jobs through the API ---------------------------------------------------------------------------------


def test_jobs_can_be_listed_paused_resumed_and_run_now(client, keys, database) -> None:
    listed = client.get("/v1/retention/jobs", headers=keys["admin"])
    assert listed.status_code == 200
    jobs = {j["rule"]: j for j in listed.get_json()["items"]}
    assert jobs["dsr_export_files"]["schedule"] == "15 3 * * *" and jobs["dsr_export_files"]["paused"] is False
    paused = client.post("/v1/retention/jobs/dsr_export_files:pause", headers=keys["admin"])
    assert paused.status_code == 200 and paused.get_json()["paused"] is True
    engine = create_engine(database.url)
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT next_run_time FROM apscheduler_jobs WHERE id = 'retention.dsr_export_files'")
        ).one()
    engine.dispose()
    assert row[0] is None
    resumed = client.post("/v1/retention/jobs/dsr_export_files:resume", headers=keys["dpo"])
    assert resumed.get_json()["paused"] is False and resumed.get_json()["next_run_at"]
    first = client.post("/v1/retention/jobs/dsr_export_files:run-now", headers=keys["compliance_officer"]).get_json()
    assert first["action"] == "dry_run"
    second = client.post("/v1/retention/jobs/dsr_export_files:run-now", headers=keys["compliance_officer"]).get_json()
    assert second["action"] == "awaiting_approval" and second["dry_run_id"] == first["run_id"]
    approve(client, keys, first["run_id"])
    third = client.post("/v1/retention/jobs/dsr_export_files:run-now", headers=keys["compliance_officer"]).get_json()
    assert third["action"] == "executed" and third["status"] == "completed"
    assert_problem(client.post("/v1/retention/jobs/nope:pause", headers=keys["admin"]), 404, "not-found")
    assert_problem(client.post("/v1/retention/jobs/dsr_export_files:pause", headers=keys["app"]), 403, "forbidden")


def test_cli_runs_and_controls_rules(app, client, keys, database) -> None:
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["retention", "list"])
    assert listed.exit_code == 0 and "inactive_profiles" in listed.output
    preview = runner.invoke(args=["retention", "dry-run", "expired_api_keys"])
    assert preview.exit_code == 0, preview.output
    run_id = preview.output.split("\t")[0]
    refused = runner.invoke(args=["retention", "execute", "expired_api_keys"])
    assert refused.exit_code != 0 and "dry run" in refused.output
    assert runner.invoke(args=["retention", "approve", run_id]).exit_code == 0
    done = runner.invoke(args=["retention", "execute", "expired_api_keys", "--dry-run-id", run_id])
    assert done.exit_code == 0 and "completed" in done.output
    paused = runner.invoke(args=["retention", "pause", "expired_api_keys"])
    assert paused.exit_code == 0 and '"paused": true' in paused.output
    assert '"paused": false' in runner.invoke(args=["retention", "resume", "expired_api_keys"]).output


# -- the deletion ledger --------------------------------------------------------------------------------------------


def test_a_restored_copy_is_erased_again_by_replaying_the_ledger(
    app, client, keys, external_db, database, tmp_path
) -> None:
    seed_orders(external_db)
    register_source(client, keys, external_db)
    put_rules(client, keys, source_rule(approval=False))
    hold(client, keys, make_subject(client, keys, "C-1"))
    if external_db.backend == "sqlite":
        backup = tmp_path / "crm-backup.db"
        shutil.copyfile(external_db.path, backup)
    else:
        external_db.execute("CREATE TABLE crm_orders_snapshot AS SELECT * FROM crm_orders")
    assert execute(client, keys)["counts"]["rows"] == 16
    assert external_db.count() == 14
    # restore the old copy
    app.extensions["govsvc.sources"].dispose()
    if external_db.backend == "sqlite":
        external_db.engine.dispose()
        shutil.copyfile(backup, external_db.path)
    else:
        external_db.execute("DELETE FROM crm_orders")
        external_db.execute("INSERT INTO crm_orders SELECT * FROM crm_orders_snapshot")
    assert external_db.count() == 30
    result = app.test_cli_runner().invoke(args=["retention", "replay-ledger"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["source:crm_orders"]["rows_deleted"] == 16
    assert external_db.count() == 14 and external_db.count(where="customer_id = 'C-1'") == 6
    again = app.test_cli_runner().invoke(args=["retention", "replay-ledger"])
    assert json.loads(again.output)["source:crm_orders"].get("rows_deleted", 0) == 0


def test_the_ledger_is_insert_only(client, keys, external_db, database) -> None:
    seed_orders(external_db)
    register_source(client, keys, external_db)
    put_rules(client, keys, source_rule(approval=False))
    execute(client, keys)
    engine = create_engine(database.url)
    for statement in ("UPDATE deletion_ledger SET store = 'x'", "DELETE FROM deletion_ledger"):
        with pytest.raises(Exception, match="insert-only"), engine.begin() as connection:
            connection.execute(text(statement))
    engine.dispose()
    assert len(db_rows(database, DeletionTombstone)) == 5


def test_a_subject_event_trigger_purges_every_row_of_the_subjects_it_made_due(client, keys, external_db) -> None:
    seed_orders(external_db)
    register_source(client, keys, external_db)
    document = (
        source_rule(approval=False)
        .replace("trigger: created_at", "trigger: consent_withdrawn")
        .replace("period_days: 365", "period_days: 0")
    )
    put_rules(client, keys, document)
    withdrawn = make_subject(client, keys, "C-4")
    still_given = make_subject(client, keys, "C-5")
    notice = {"id": "privacy", "version": "3", "sha256": "a" * 64, "language": "en"}
    for subject, acts in ((withdrawn, ("given", "withdrawn")), (still_given, ("given",))):
        for act in acts:
            body = {
                "subject": {"subject_id": subject},
                "event": act,
                "items": [{"purpose": "marketing.communications.email"}],
                "channel": "web",
            }
            if act == "given":
                body |= {"consent_type": "express", "notice": notice}
            assert client.post("/v1/consents", json=body, headers=keys["app"]).status_code == 201
    done = execute(client, keys)
    assert done["counts"]["rows"] == 6 and done["counts"]["subjects"] == 1  # all of C-4's orders, old and new
    assert external_db.count() == 24 and external_db.count(where="customer_id = 'C-4'") == 0
    assert execute(client, keys)["counts"]["rows"] == 0


def _copy_database(database, cluster_of, source: str, target: str, tmp_path) -> None:
    """A backup or a restore of the whole service database (every connection to it closed first)."""
    if database.backend == "sqlite":
        files = {"live": database.url.removeprefix("sqlite:///"), "backup": str(tmp_path / "backup.db")}
        with sqlite3.connect(files[source]) as origin, sqlite3.connect(files[target]) as copy:
            origin.backup(copy)
        return
    cluster = cluster_of()
    names = {"live": str(make_url(database.url).database)}
    names["backup"] = names["live"] + "_backup"
    cluster.admin_execute(f"DROP DATABASE IF EXISTS {names[target]} WITH (FORCE)")
    cluster.admin_execute(f"CREATE DATABASE {names[target]} TEMPLATE {names[source]}")


def test_a_restored_service_database_is_erased_again_from_a_ledger_export(
    app, client, keys, database, request, tmp_path
) -> None:
    """A backup of the service database taken before an erasure holds the subject's wrapped data key, and a ledger
    without that erasure's tombstone. The ledger export kept apart brings the tombstone back, and the replay
    destroys the key again."""
    subject = make_subject(client, keys, "C-7")
    profile = {"fields": {"name": "李雷", "mobile": "+8613812345678"}}
    put = client.put(f"/v1/vault/subjects/{subject}/profile", json=profile, headers=keys["app"])
    assert put.status_code == 200, put.get_json()
    url = f"/v1/vault/subjects/{subject}/profile?purpose=essential.service"
    live = app.extensions["govsvc.db"]
    live.dispose()
    _copy_database(database, lambda: request.getfixturevalue("postgres_cluster"), "live", "backup", tmp_path)
    assert client.delete(f"/v1/vault/subjects/{subject}/profile", headers=keys["dpo"]).status_code == 200
    runner = app.test_cli_runner()
    export = tmp_path / "ledger.jsonl"
    assert runner.invoke(args=["retention", "export-ledger", "--output", str(export)]).exit_code == 0
    (line,) = export.read_text().splitlines()
    assert {key: json.loads(line)[key] for key in ("subject_key", "store", "action")} == {
        "subject_key": subject,
        "store": "vault",
        "action": "crypto_shred",
    }
    live.dispose()
    _copy_database(database, lambda: request.getfixturevalue("postgres_cluster"), "backup", "live", tmp_path)
    app.extensions["govsvc.keys"].cache.clear()  # as a restarted instance would start
    resurrected = client.get(url, headers=keys["app"]).get_json()["fields"]
    assert resurrected["mobile"]["value"] is not None  # the restore brought the erased subject back
    assert client.get("/v1/retention/ledger?store=vault", headers=keys["dpo"]).get_json()["items"] == []

    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n" + json.dumps({"subject_key": subject, "store": "vault"}) + "\n")
    refused = runner.invoke(args=["retention", "replay-ledger", "--from", str(bad)])
    assert refused.exit_code == 1 and "line 2: missing field action" in refused.output
    assert client.get("/v1/retention/ledger?store=vault", headers=keys["dpo"]).get_json()["items"] == []

    replayed = runner.invoke(args=["retention", "replay-ledger", "--from", str(export)])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stderr) == {"imported": 1}
    assert json.loads(replayed.stdout)["vault"]["subjects_shredded"] == 1
    assert_problem(client.get(url, headers=keys["app"]), 410, "key-destroyed")
    again = runner.invoke(args=["retention", "replay-ledger", "--from", str(export)])
    assert json.loads(again.stderr) == {"imported": 0}
    assert json.loads(again.stdout)["vault"].get("subjects_shredded", 0) == 0  # nothing had come back this time


def test_the_scheduled_ledger_export_appends_what_the_file_lacks(app_factory, keys, tmp_path) -> None:
    """GOVSVC_LEDGER_EXPORT_DIR: a leased interval job keeps deletion-ledger.jsonl up to date (the lines of
    export-ledger), cuts off a line a crash left half-written, and refuses to append after a line it cannot read."""
    exports = tmp_path / "exports"
    app = app_factory(ledger_export_dir=str(exports))
    client, runner = app.test_client(), app.test_cli_runner()
    export_now = app.extensions["govsvc.jobs"].function("retention.ledger_export")
    assert export_now is not None
    assert app_factory().extensions["govsvc.jobs"].function("retention.ledger_export") is None  # off by default

    def erase_a_subject(crm_id: str) -> None:
        subject = make_subject(client, keys, crm_id)
        profile = f"/v1/vault/subjects/{subject}/profile"
        put = client.put(profile, json={"fields": {"name": "李雷"}}, headers=keys["app"])
        assert put.status_code == 200, put.get_json()
        assert client.delete(profile, headers=keys["dpo"]).status_code == 200

    def cli_export() -> str:
        result = runner.invoke(args=["retention", "export-ledger"])
        assert result.exit_code == 0, result.output
        return result.stdout

    erase_a_subject("LX-1")
    first = export_now()
    path = exports / "deletion-ledger.jsonl"
    assert first["appended"] == 1 and path.read_text() == cli_export()
    assert export_now() == {"appended": 0, "through_seq": first["through_seq"]}

    clean = path.read_bytes()
    path.write_bytes(clean + b'{"seq": 99, "subject_ke')  # a crash in the middle of a line
    assert export_now()["appended"] == 0 and path.read_bytes() == clean
    erase_a_subject("LX-2")
    assert export_now()["appended"] == 1 and path.read_text() == cli_export()
    assert len(path.read_text().splitlines()) == 2

    path.write_bytes(path.read_bytes() + b"not a tombstone\n")
    erase_a_subject("LX-3")
    with pytest.raises(ValueError, match="last line is not an exported tombstone"):
        export_now()
    assert path.read_bytes().endswith(b"not a tombstone\n")  # nothing appended after it

    cron = runner.invoke(args=["retention", "append-ledger-export", str(tmp_path / "by-cron")])
    assert cron.exit_code == 0 and json.loads(cron.stdout)["appended"] == 3
    assert (tmp_path / "by-cron" / "deletion-ledger.jsonl").read_text() == cli_export()
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        exported = session.scalars(
            select(AuditEvent.details).where(AuditEvent.action == "retention.ledger_exported").order_by(AuditEvent.id)
        ).all()
    assert [json.loads(details)["tombstones"] for details in exported] == [1, 1, 3]


def test_a_withdrawn_consents_page_reads_the_withdrawn_states_from_where_it_left_off(app, database) -> None:
    """The rule clearing withdrawn consents pages through them by subject: with 20,000 given states and 40
    withdrawn ones, a page reads the withdrawn states after its start (the partial index), not every state."""
    only_postgresql(database)

    fill(
        database.url,
        lambda connection: insert_subjects(connection, 20_000),
        lambda connection: insert_consent_states(
            connection, 20_000, "CASE WHEN n % 500 = 0 THEN 'withdrawn' ELSE 'given' END"
        ),
    )
    db = app.extensions["govsvc.db"]
    with StatementCapture(db.engine, "FROM subjects") as captured, db.transaction(write=False) as session:
        items = ConsentTarget().page(session, None, utcnow() - timedelta(days=365), 10_000, 10)
        assert [item.subject_pk for item in items] == list(range(10_500, 15_500, 500))
        assert captured.rows_read(session, {"consent_state"}) <= 100


@pytest.mark.parametrize("trigger", ["last_activity", "consent_withdrawn"])
def test_a_vault_rule_page_groups_the_subjects_after_where_it_left_off(app, database, trigger: str) -> None:
    """A page of a vault rule with a subject-level trigger aggregates the subjects after the previous page's last
    one, not the whole table each time: with 20,000 profiles, a page after subject 19,000 reads about 1,000."""
    only_postgresql(database)

    fill(
        database.url,
        lambda connection: insert_subjects(connection, 20_000),
        lambda connection: connection.execute(
            text(
                "INSERT INTO vault_fields (subject_pk, field, category, level, value_plain, version, updated_at) "
                "SELECT n, 'email', 'user.contact.email', 'L2', 'x', 1, now() - interval '400 days' "
                "FROM generate_series(1, 20000) n"
            )
        ),
        lambda connection: insert_consent_states(connection, 20_000, "'withdrawn'"),
    )
    rule = Rule("plan", "vault", ("user.contact",), 365, trigger, "delete", None, 0, None, (), None)
    db = app.extensions["govsvc.db"]
    table = "vault_fields" if trigger == "last_activity" else "consent_state"
    with StatementCapture(db.engine, "FROM subjects") as captured, db.transaction(write=False) as session:
        items = VaultTarget(None).page(session, rule, utcnow() - timedelta(days=365), 19_000, 10)
        assert [item.subject_pk for item in items] == list(range(19_001, 19_011))
        assert captured.rows_read(session, {table}) <= 2_500
