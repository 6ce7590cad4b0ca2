"""HTTP layer of retention (``/v1/retention``): the rules (read, change: validated, versioned, audited), dry runs,
approvals, executions, run reports, the rules' scheduled jobs (pause, resume, run now), subject events that start
retention clocks, and the deletion ledger."""

from __future__ import annotations

import json
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Boolean, Dict, Integer, List, Nested, String
from apiflask.validators import Length, OneOf
from flask import current_app
from sqlalchemy import select

from govsvc.audit.service import record
from govsvc.core.access import current_principal, requires
from govsvc.core.db import get_db, get_session
from govsvc.core.errors import NotFoundError
from govsvc.core.idempotency import idempotent
from govsvc.core.pagination import cursor_int, page
from govsvc.core.scheduler import JobControl
from govsvc.core.schemas import PageQuerySchema, StrictSchema
from govsvc.retention import rules as rule_store
from govsvc.retention.jobs import RuleJobSync, job_name, scheduled_run, set_paused
from govsvc.retention.models import DeletionTombstone, RetentionRun
from govsvc.retention.service import Retention
from govsvc.subjects import service as subjects
from govsvc.subjects.api import SubjectRefSchema, field_keys

bp = APIBlueprint("retention", __name__, url_prefix="/v1/retention", tag="Retention")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 409, 413, 415, 422]


def retention() -> Retention:
    return current_app.extensions["govsvc.retention"]


def actor() -> str:
    return current_principal().principal_id


# -- schemas ---------------------------------------------------------------------------------------------------


class RetentionRuleSchema(Schema):
    key = String()
    description = String()
    store = String()
    categories = List(String())
    period_days = Integer()
    trigger = String()
    action = String()
    masking_profile = String(allow_none=True)
    min_retention_days = Integer()
    legal_source = String(allow_none=True)
    exceptions = List(String())
    schedule = String(allow_none=True)


class RetentionPolicySchema(Schema):
    version = Integer()
    digest = String(allow_none=True)
    require_approved_dry_run = Boolean()
    approval_valid_days = Integer()
    document = String(allow_none=True, metadata={"description": "the YAML as stored"})
    rules = List(Nested(RetentionRuleSchema))


class RetentionPolicyChangeSchema(StrictSchema):
    document = String(required=True, validate=Length(min=1, max=rule_store.MAX_DOCUMENT_CHARS))
    base_digest = String(
        load_default=None, validate=Length(equal=64), metadata={"description": "digest of the version edited"}
    )
    comment = String(load_default=None, validate=Length(max=500))


class RetentionPolicyVersionSchema(Schema):
    version = Integer()
    digest = String()
    created_at = AwareDateTime()
    created_by = String()
    comment = String(allow_none=True)


class RetentionPolicyVersionListSchema(Schema):
    items = List(Nested(RetentionPolicyVersionSchema))


class RetentionRunSchema(Schema):
    run_id = String()
    rule = String()
    mode = String(metadata={"description": "dry_run | execute"})
    status = String(metadata={"description": "running | completed | failed"})
    store = String()
    policy_version = Integer()
    cutoff = AwareDateTime(metadata={"description": "data older than this (or whose trigger came before it) is due"})
    counts = Dict(metadata={"description": "rows, restricted, subjects, by_category"})
    exclusions = Dict(metadata={"description": "rows left alone per reason: legal_hold, open_dsr, open_contract"})
    samples = List(String(), metadata={"description": "pseudonymous ids of a few subjects concerned"})
    errors = List(String())
    dry_run_id = String(allow_none=True)
    approved_by = String(allow_none=True)
    approved_at = AwareDateTime(allow_none=True)
    requested_by = String()
    started_at = AwareDateTime()
    finished_at = AwareDateTime(allow_none=True)
    duration_ms = Integer(allow_none=True)


class RetentionRunItemSchema(RetentionRunSchema):
    """A run as the run list shows it (its own OpenAPI component: one class, one component)."""


class RetentionRunListSchema(Schema):
    items = List(Nested(RetentionRunItemSchema))
    next_cursor = String(allow_none=True)


class RetentionRunQuerySchema(PageQuerySchema):
    rule = String(load_default=None, validate=Length(max=80))
    mode = String(load_default=None, validate=OneOf(["dry_run", "execute"]))


class RetentionExecuteSchema(StrictSchema):
    dry_run_id = String(load_default=None, validate=Length(max=40))


class RetentionJobSchema(Schema):
    name = String()
    rule = String()
    schedule = String(allow_none=True)
    paused = Boolean()
    next_run_at = String(allow_none=True)


class RetentionJobItemSchema(RetentionJobSchema):
    """A job as the job list shows it (its own OpenAPI component: one class, one component)."""


class RetentionRuleJobsSchema(Schema):
    items = List(Nested(RetentionJobItemSchema))


class RetentionRunNowSchema(Schema):
    rule = String()
    action = String(metadata={"description": "executed | dry_run | awaiting_approval | skipped"})
    run_id = String(allow_none=True)
    dry_run_id = String(allow_none=True)
    status = String(allow_none=True)
    reason = String(allow_none=True)


class RetentionEventSchema(StrictSchema):
    subject = Nested(SubjectRefSchema, required=True)
    event = String(
        required=True,
        validate=OneOf(["contract_started", "contract_end", "purpose_completed", "account_cancelled"]),
    )
    purpose = String(load_default=None, validate=Length(max=120))


class RetentionEventRecordedSchema(Schema):
    subject_id = String()
    event = String()
    rules = List(String(), metadata={"description": "the rules whose clock this starts"})


class RetentionLedgerQuerySchema(PageQuerySchema):
    store = String(load_default=None, validate=Length(max=120))


class RetentionTombstoneSchema(Schema):
    seq = Integer()
    subject_key = String(metadata={"description": "pseudonymous: a subject id or a keyed hash of a source's key"})
    store = String()
    deleted_before = AwareDateTime()
    action = String(metadata={"description": "crypto_shred | delete | anonymize | erase_fields"})
    run_id = String(allow_none=True, metadata={"description": "a retention run, or dsr:<request id>"})
    recorded_at = AwareDateTime()
    detail = Dict(
        allow_none=True,
        metadata={"description": "what a partial deletion removed: a rule's `categories` or an erasure's `fields`"},
    )


class RetentionLedgerSchema(Schema):
    items = List(Nested(RetentionTombstoneSchema))
    next_cursor = String(allow_none=True)


def run_document(run: RetentionRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "rule": run.rule_key,
        "mode": run.mode,
        "status": run.status,
        "store": run.store,
        "policy_version": run.policy_version,
        "cutoff": run.cutoff,
        "counts": json.loads(run.counts or "{}"),
        "exclusions": json.loads(run.exclusions or "{}"),
        "samples": json.loads(run.samples or "[]"),
        "errors": json.loads(run.errors or "[]"),
        "dry_run_id": run.dry_run_id,
        "approved_by": run.approved_by,
        "approved_at": run.approved_at,
        "requested_by": run.requested_by,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_ms": run.duration_ms,
    }


# -- the rules ---------------------------------------------------------------------------------------------------


@bp.get("/policy")
@bp.output(RetentionPolicySchema)
@bp.doc(summary="The retention rules in force (newest stored version)", security=SECURITY, responses=[200, *ERRORS])
@requires("retention", "read")
def get_policy() -> dict[str, Any]:
    return policy_document()


def policy_document() -> dict[str, Any]:
    session = get_session()
    found = rule_store.latest(session)
    policy = retention().policy(session)
    return {
        "version": policy.version,
        "digest": rule_store.digest(found[1]) if found else None,
        "require_approved_dry_run": policy.require_approved_dry_run,
        "approval_valid_days": policy.approval_valid_days,
        "document": found[1] if found else None,
        "rules": [rule.as_dict() for rule in policy.rules.values()],
    }


@bp.put("/policy")
@bp.input(RetentionPolicyChangeSchema, arg_name="body")
@bp.output(RetentionPolicySchema)
@bp.doc(
    summary="Replace the retention rules (YAML): validated, stored as a new version, audited",
    description="Give `base_digest` (the `digest` you edited) to be refused with 409 if someone changed the rules "
    "in between. Every problem is named in `errors[]` (e.g. `rules[2].action`).",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("retention", "write")
def put_policy(body: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    masker = current_app.extensions["govsvc.pii"].masker
    rule_store.parse(body["document"], masking_profiles=set(masker.rules.profiles))
    version = rule_store.store(
        session, body["document"], actor=actor(), comment=body["comment"], base_digest=body["base_digest"]
    )
    record(session, "config.changed", object_ref="policy:retention", details={"version": version})
    return policy_document()


@bp.get("/policy/versions")
@bp.output(RetentionPolicyVersionListSchema)
@bp.doc(summary="Every stored version of the retention rules", security=SECURITY, responses=[200, *ERRORS])
@requires("retention", "read")
def list_policy_versions() -> dict[str, Any]:
    return {
        "items": [
            {
                "version": v.version,
                "digest": v.digest,
                "created_at": v.created_at,
                "created_by": v.created_by,
                "comment": v.comment,
            }
            for v in rule_store.versions(get_session())
        ]
    }


# -- runs --------------------------------------------------------------------------------------------------------


@bp.post("/rules/<string:rule_key>:dry-run")
@bp.output(RetentionRunSchema, status_code=201)
@bp.doc(
    summary="Preview a rule: counts per category, pseudonymous samples, exclusions and why (stored, audited)",
    security=SECURITY,
    responses=[201, *ERRORS],
)
@requires("retention", "run")
def dry_run(rule_key: str) -> tuple[dict[str, Any], int]:
    get_session().rollback()  # the run commits on its own
    run = retention().dry_run(get_db(), rule_key, actor=actor())
    return run_document(run), 201


@bp.post("/runs/<string:run_id>:approve")
@bp.output(RetentionRunSchema)
@bp.doc(summary="Approve a dry run: its rule may now be executed with it", security=SECURITY, responses=[200, *ERRORS])
@requires("retention", "approve")
def approve_run(run_id: str) -> dict[str, Any]:
    return run_document(retention().approve(get_session(), run_id, actor=actor()))


@bp.post("/rules/<string:rule_key>:execute")
@bp.input(RetentionExecuteSchema, arg_name="body")
@bp.output(RetentionRunSchema)
@bp.doc(
    summary="Execute a rule (after its approved dry run when the policy requires one); resumes a crashed run",
    description="409 `dry_run_required`, `dry_run_not_approved`, `dry_run_stale`, `dry_run_used` or `lease_held` "
    "(another instance runs it) in `reason`.",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("retention", "execute")
def execute(rule_key: str, body: dict[str, Any]) -> dict[str, Any]:
    get_session().rollback()
    run = retention().execute(get_db(), rule_key, actor=actor(), dry_run_id=body["dry_run_id"])
    return run_document(run)


@bp.get("/runs")
@bp.input(RetentionRunQuerySchema, location="query", arg_name="query")
@bp.output(RetentionRunListSchema)
@bp.doc(summary="Run reports, newest first", security=SECURITY, responses=[200, *ERRORS])
@requires("retention", "read")
def list_runs(query: dict[str, Any]) -> dict[str, Any]:
    statement = select(RetentionRun).order_by(RetentionRun.pk.desc()).limit(query["limit"] + 1)
    before = cursor_int(query.get("cursor"))
    if before is not None:
        statement = statement.where(RetentionRun.pk < before)
    if query["rule"]:
        statement = statement.where(RetentionRun.rule_key == query["rule"])
    if query["mode"]:
        statement = statement.where(RetentionRun.mode == query["mode"])
    rows, next_cursor = page(get_session().scalars(statement).all(), query["limit"], lambda r: {"after": r.pk})
    return {"items": [run_document(r) for r in rows], "next_cursor": next_cursor}


@bp.get("/runs/<string:run_id>")
@bp.output(RetentionRunSchema)
@bp.doc(summary="One run report", security=SECURITY, responses=[200, *ERRORS])
@requires("retention", "read")
def get_run(run_id: str) -> dict[str, Any]:
    return run_document(retention().get_run(get_session(), run_id))


# -- scheduled jobs ----------------------------------------------------------------------------------------------


def job_control() -> JobControl:
    """The job store is written outside the request's transaction (which must not hold SQLite's write lock)."""
    get_session().rollback()
    sync: RuleJobSync = current_app.extensions["govsvc.retention_jobs"]
    sync()
    return JobControl(get_db().engine, current_app.extensions["govsvc.jobs"])


def _job_document(control: JobControl, rule_key: str) -> dict[str, Any]:
    status = control.status(job_name(rule_key))
    return {**status.as_dict(), "rule": rule_key}


def require_scheduled_rule(rule_key: str) -> None:
    _, rule = retention().rule(get_session(), rule_key)
    if not rule.schedule:
        raise NotFoundError(f"Rule {rule_key} has no schedule.")


@bp.get("/jobs")
@bp.output(RetentionRuleJobsSchema)
@bp.doc(summary="The scheduled rules: schedule, paused or not, next run", security=SECURITY, responses=[200, *ERRORS])
@requires("retention", "read")
def list_jobs() -> dict[str, Any]:
    control = job_control()
    keys = sorted(k for k, r in retention().policy(get_session()).rules.items() if r.schedule)
    return {"items": [_job_document(control, key) for key in keys]}


@bp.post("/jobs/<string:rule_key>:pause")
@bp.output(RetentionJobSchema)
@bp.doc(summary="Pause a rule's scheduled runs (on every instance)", security=SECURITY, responses=[200, *ERRORS])
@requires("retention", "schedule")
def pause_job(rule_key: str) -> dict[str, Any]:
    require_scheduled_rule(rule_key)
    control = job_control()
    set_paused(get_session(), control, rule_key, paused=True)
    return _job_document(control, rule_key)


@bp.post("/jobs/<string:rule_key>:resume")
@bp.output(RetentionJobSchema)
@bp.doc(summary="Resume a rule's scheduled runs", security=SECURITY, responses=[200, *ERRORS])
@requires("retention", "schedule")
def resume_job(rule_key: str) -> dict[str, Any]:
    require_scheduled_rule(rule_key)
    control = job_control()
    set_paused(get_session(), control, rule_key, paused=False)
    return _job_document(control, rule_key)


@bp.post("/jobs/<string:rule_key>:run-now")
@bp.output(RetentionRunNowSchema)
@bp.doc(
    summary="Run a rule's scheduled pass now, here: execute the approved dry run, or make a dry run to approve",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("retention", "execute")
def run_job_now(rule_key: str) -> dict[str, Any]:
    retention().rule(get_session(), rule_key)
    get_session().rollback()
    return scheduled_run(get_db(), retention(), rule_key, actor=actor())


# -- subject events and the ledger -------------------------------------------------------------------------------


@bp.post("/events")
@bp.input(RetentionEventSchema, arg_name="body")
@bp.output(RetentionEventRecordedSchema, status_code=201)
@bp.doc(
    summary="Report a subject event that starts retention clocks (contract end, account cancellation, purpose "
    "completed, or a contract start: an open contract)",
    security=SECURITY,
    responses=[201, *ERRORS],
)
@requires("retention_events", "create")
@idempotent()
def record_event(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    session = get_session()
    subject = subjects.resolve(session, field_keys(), body["subject"])
    rules = retention().record_event(session, subject, body["event"], actor=actor(), purpose=body["purpose"])
    return {"subject_id": subject.subject_id, "event": body["event"], "rules": rules}, 201


@bp.get("/ledger")
@bp.input(RetentionLedgerQuerySchema, location="query", arg_name="query")
@bp.output(RetentionLedgerSchema)
@bp.doc(
    summary="The deletion ledger (insert-only tombstones; pseudonymous keys)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("retention", "read")
def list_ledger(query: dict[str, Any]) -> dict[str, Any]:
    statement = select(DeletionTombstone).order_by(DeletionTombstone.pk).limit(query["limit"] + 1)
    after = cursor_int(query.get("cursor"))
    if after is not None:
        statement = statement.where(DeletionTombstone.pk > after)
    if query["store"]:
        statement = statement.where(DeletionTombstone.store == query["store"])
    rows, next_cursor = page(get_session().scalars(statement).all(), query["limit"], lambda r: {"after": r.pk})
    return {
        "items": [
            {
                "seq": r.pk,
                "subject_key": r.subject_key,
                "store": r.store,
                "deleted_before": r.deleted_before,
                "action": r.action,
                "run_id": r.run_id,
                "recorded_at": r.recorded_at,
                "detail": json.loads(r.detail) if r.detail else None,
            }
            for r in rows
        ],
        "next_cursor": next_cursor,
    }


__all__ = ["bp"]
