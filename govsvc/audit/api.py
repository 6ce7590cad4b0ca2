"""HTTP layer of the audit log: search, proofs, checkpoints, keys, exports, verification and access reports."""

from __future__ import annotations

import base64
import json
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Boolean, Dict, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range, Regexp
from flask import Response, current_app, stream_with_context

from govsvc.audit import export, proofs, reports, signing
from govsvc.audit.service import EventFilter, get_event, search
from govsvc.core.access import public, requires
from govsvc.core.db import get_db, get_session, records_on_read
from govsvc.core.pagination import cursor_int, page
from govsvc.core.schemas import PageQuerySchema, StrictSchema

bp = APIBlueprint("audit", __name__, url_prefix="/v1/audit", tag="Audit")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 422]
_ACTION_FILTER = Regexp(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$", error="a dotted action or a prefix.*")
_REF = Length(min=1, max=200)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _settings() -> Any:
    return current_app.config["GOVSVC_SETTINGS"]


class FilterQuerySchema(StrictSchema):
    time_from = AwareDateTime(load_default=None, metadata={"description": "UTC ISO 8601, inclusive"})
    time_to = AwareDateTime(load_default=None, metadata={"description": "UTC ISO 8601, exclusive"})
    actor = String(load_default=None, validate=_REF, metadata={"description": "principal id, e.g. client:cl_…"})
    subject = String(load_default=None, validate=_REF, metadata={"description": "pseudonymous subject reference"})
    action = String(load_default=None, validate=_ACTION_FILTER)
    outcome = String(load_default=None, validate=OneOf(["success", "failure", "denied", "allow", "deny", "error"]))
    seq_from = Integer(load_default=None, validate=Range(min=0), metadata={"description": "inclusive"})
    seq_to = Integer(load_default=None, validate=Range(min=0), metadata={"description": "exclusive"})


class EventQuerySchema(FilterQuerySchema, PageQuerySchema):
    pass


class ExportQuerySchema(FilterQuerySchema):
    format = String(load_default="jsonl", validate=OneOf(["jsonl", "csv"]))


class VerifyQuerySchema(StrictSchema):
    seq_from = Integer(load_default=None, validate=Range(min=0), data_key="from")
    seq_to = Integer(load_default=None, validate=Range(min=0), data_key="to")


class ReportQuerySchema(StrictSchema):
    time_from = AwareDateTime(load_default=None)
    time_to = AwareDateTime(load_default=None)


class AnomalyQuerySchema(ReportQuerySchema):
    threshold = Integer(load_default=None, validate=Range(min=1), metadata={"description": "default from config"})


class InclusionQuerySchema(StrictSchema):
    seq = Integer(required=True, validate=Range(min=0))
    tree_size = Integer(load_default=None, validate=Range(min=1), metadata={"description": "default: latest"})


class ConsistencyQuerySchema(StrictSchema):
    first = Integer(required=True, validate=Range(min=1))
    second = Integer(load_default=None, validate=Range(min=1), metadata={"description": "default: latest"})


class EventSchema(Schema):
    seq = Integer(required=True)
    leaf_hash = String(required=True, metadata={"description": "base64 SHA-256(0x00 || canonical JSON)"})
    event = Dict(required=True, metadata={"description": "the event as committed to the tree"})


class EventItemSchema(EventSchema):
    """An event as a page lists it (its own OpenAPI component: one class, one component)."""


class EventPageSchema(Schema):
    items = List(Nested(EventItemSchema), required=True)
    next_cursor = String(allow_none=True, required=True)


class CheckpointSchema(Schema):
    tree_size = Integer(required=True)
    root_hash = String(required=True)
    key_name = String(required=True)
    created_at = AwareDateTime(required=True)
    note = String(required=True, metadata={"description": "C2SP signed note (checkpoint)"})


class ProofSchema(Schema):
    tree_size = Integer(required=True)
    root_hash = String(required=True)
    proof = List(String(), required=True)
    seq = Integer()
    leaf_hash = String()
    first = Integer()
    first_root_hash = String()


class KeySchema(Schema):
    vkey = String(required=True, metadata={"description": "<name>+<hex key id>+<base64 key> (C2SP note verifier key)"})
    key_id = String(required=True)
    created_at = AwareDateTime(required=True)
    retired_at = AwareDateTime(allow_none=True)
    active = Boolean(required=True)


class KeyItemSchema(KeySchema):
    """A signing key as the key list shows it (its own OpenAPI component: one class, one component)."""


class KeyListSchema(Schema):
    keys = List(Nested(KeyItemSchema), required=True)


class FindingSchema(Schema):
    kind = String(required=True)
    seq = Integer(allow_none=True)
    line = Integer(allow_none=True)
    count = Integer()
    message = String(required=True)


class VerifyReportSchema(Schema):
    ok = Boolean(required=True)
    tree_size = Integer(allow_none=True)
    root_hash = String(allow_none=True)
    from_seq = Integer(allow_none=True)
    to_seq = Integer(allow_none=True)
    event_count = Integer(required=True)
    first_bad_seq = Integer(allow_none=True)
    findings = List(Nested(FindingSchema), required=True)
    warnings = List(String(), required=True)


class SubjectReportSchema(Schema):
    subject = String(required=True)
    accesses = List(Dict(), required=True)


class PrincipalReportSchema(Schema):
    principal = String(required=True)
    actions = List(Dict(), required=True)
    distinct_subjects = Integer(required=True)


class AnomalyReportSchema(Schema):
    threshold = Integer(required=True)
    anomalies = List(Dict(), required=True)


def _criteria(query: dict[str, Any]) -> EventFilter:
    return EventFilter(
        time_from=query.get("time_from"),
        time_to=query.get("time_to"),
        actor=query.get("actor"),
        subject=query.get("subject"),
        action=query.get("action"),
        outcome=query.get("outcome"),
        seq_from=query.get("seq_from"),
        seq_to=query.get("seq_to"),
    )


def _event_document(seq: int, event_json: str, leaf_hash: bytes) -> dict[str, Any]:
    return {"seq": seq, "leaf_hash": _b64(bytes(leaf_hash)), "event": json.loads(event_json)}


@bp.get("/events")
@bp.input(EventQuerySchema, location="query", arg_name="query")
@bp.output(EventPageSchema)
@bp.doc(summary="Search sequenced audit events", security=SECURITY, responses=[200, *ERRORS])
@requires("audit", "read")
def list_events(query: dict[str, Any]) -> dict[str, Any]:
    rows = search(get_session(), _criteria(query), after_seq=cursor_int(query["cursor"]), limit=query["limit"])
    items, next_cursor = page(rows, query["limit"], lambda row: {"after": row[0].seq})
    return {
        "items": [_event_document(leaf.seq, leaf.event_json, leaf.leaf_hash) for leaf, _event in items],
        "next_cursor": next_cursor,
    }


@bp.get("/events/<int(max=9223372036854775807):seq>")  # past a 64-bit integer: no such event (404)
@bp.output(EventSchema)
@bp.doc(summary="One audit event by sequence number", security=SECURITY, responses=[200, *ERRORS])
@requires("audit", "read")
def get_one_event(seq: int) -> dict[str, Any]:
    leaf, _event = get_event(get_session(), seq)
    return _event_document(leaf.seq, leaf.event_json, leaf.leaf_hash)


def _checkpoint_document(checkpoint: Any) -> dict[str, Any]:
    return {
        "tree_size": checkpoint.tree_size,
        "root_hash": _b64(bytes(checkpoint.root_hash)),
        "key_name": checkpoint.key_name,
        "created_at": checkpoint.created_at,
        "note": checkpoint.note,
    }


@bp.get("/checkpoints/latest")
@bp.output(CheckpointSchema)
@bp.doc(summary="The latest signed checkpoint", security=SECURITY, responses=[200, *ERRORS])
@requires("audit", "read")
def latest_checkpoint() -> dict[str, Any]:
    return _checkpoint_document(proofs.checkpoint_at(get_session(), None))


@bp.get("/checkpoints/<int(max=9223372036854775807):tree_size>")
@bp.output(CheckpointSchema)
@bp.doc(summary="The signed checkpoint at a tree size", security=SECURITY, responses=[200, *ERRORS])
@requires("audit", "read")
def checkpoint_at(tree_size: int) -> dict[str, Any]:
    return _checkpoint_document(proofs.checkpoint_at(get_session(), tree_size))


@bp.get("/proofs/inclusion")
@bp.input(InclusionQuerySchema, location="query", arg_name="query")
@bp.output(ProofSchema)
@bp.doc(summary="Inclusion proof of an event in a signed tree (RFC 9162)", security=SECURITY, responses=[200, *ERRORS])
@requires("audit", "read")
def inclusion(query: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    checkpoint = proofs.checkpoint_at(session, query["tree_size"])
    leaf, _event = get_event(session, query["seq"])
    proof = proofs.inclusion_proof(session, query["seq"], checkpoint.tree_size)
    return {
        "seq": leaf.seq,
        "leaf_hash": _b64(bytes(leaf.leaf_hash)),
        "tree_size": checkpoint.tree_size,
        "root_hash": _b64(bytes(checkpoint.root_hash)),
        "proof": [_b64(h) for h in proof],
    }


@bp.get("/proofs/consistency")
@bp.input(ConsistencyQuerySchema, location="query", arg_name="query")
@bp.output(ProofSchema)
@bp.doc(summary="Consistency proof between two signed trees (RFC 9162)", security=SECURITY, responses=[200, *ERRORS])
@requires("audit", "read")
def consistency(query: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    first = proofs.checkpoint_at(session, query["first"])
    second = proofs.checkpoint_at(session, query["second"])
    proof = proofs.consistency_proof(session, first.tree_size, second.tree_size)
    return {
        "first": first.tree_size,
        "first_root_hash": _b64(bytes(first.root_hash)),
        "tree_size": second.tree_size,
        "root_hash": _b64(bytes(second.root_hash)),
        "proof": [_b64(h) for h in proof],
    }


@bp.get("/keys")
@bp.output(KeyListSchema)
@bp.doc(summary="Every checkpoint verification key, current and retired (public)")
@public
def list_keys() -> dict[str, Any]:
    keys = signing.published_keys(get_session())
    return {
        "keys": [
            {
                "vkey": key.vkey,
                "key_id": signing.key_id_hex(key.vkey),
                "created_at": key.created_at,
                "retired_at": key.retired_at,
                "active": key.retired_at is None,
            }
            for key in keys
        ]
    }


@bp.post("/keys:rotate")
@bp.output(KeySchema, status_code=201)
@bp.doc(summary="Rotate the checkpoint signing key", security=SECURITY, responses=[201, 401, 403])
@requires("audit_keys", "rotate")
def rotate_key() -> tuple[dict[str, Any], int]:
    new = signing.rotate_key(get_session(), _settings().secret_key, _settings().audit_origin)
    document = {
        "vkey": new.vkey,
        "key_id": signing.key_id_hex(new.vkey),
        "created_at": new.created_at,
        "retired_at": None,
        "active": True,
    }
    return document, 201


@bp.get("/export")
@bp.input(ExportQuerySchema, location="query", arg_name="query")
@bp.doc(
    summary="Export a verifiable bundle (JSONL) or a spreadsheet (CSV), streamed",
    description="A contiguous seq range carries a range proof; any other filter, an inclusion proof per event. "
    "Verify a JSONL bundle offline with `python -m audit.verify BUNDLE --pubkey VKEY`.",
    security=SECURITY,
    responses={200: {"description": "the bundle", "content": {"application/jsonl": {}, "text/csv": {}}}},
)
@requires("audit", "export")
@records_on_read  # audit.exported
def export_bundle(query: dict[str, Any]) -> Response:
    export_format = query["format"]
    plan = export.start_export(get_session(), _criteria(query), export_format)
    lines = export.export_lines(get_db(), plan, export_format)
    response = Response(stream_with_context(lines), mimetype=export.EXPORT_FORMATS[export_format])
    response.headers["Content-Disposition"] = f'attachment; filename="{export.export_filename(plan, export_format)}"'
    response.headers["X-Audit-Tree-Size"] = str(plan.tree_size)
    return response


@bp.get("/verify")
@bp.input(VerifyQuerySchema, location="query", arg_name="query")
@bp.output(VerifyReportSchema)
@bp.doc(
    summary="Verify the stored log (server-side, with the auditor's verifier code)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("audit", "verify")
def verify(query: dict[str, Any]) -> dict[str, Any]:
    report = export.verify_and_record(get_db(), query["seq_from"], query["seq_to"])
    return {
        "ok": report.ok,
        "tree_size": report.tree_size,
        "root_hash": _b64(report.root) if report.root else None,
        "from_seq": report.from_seq,
        "to_seq": report.to_seq,
        "event_count": report.event_count,
        "first_bad_seq": report.first_bad_seq,
        "findings": [finding.to_dict() for finding in report.sorted_findings()],
        "warnings": report.warnings,
    }


@bp.get("/reports/subjects/<string:subject_ref>")
@bp.input(ReportQuerySchema, location="query", arg_name="query")
@bp.output(SubjectReportSchema)
@bp.doc(summary="Who accessed this person's data (for access requests)", security=SECURITY, responses=[200, *ERRORS])
@requires("audit", "report")
def subject_report(subject_ref: str, query: dict[str, Any]) -> dict[str, Any]:
    accesses = reports.subject_access(get_session(), subject_ref, query["time_from"], query["time_to"])
    for access in accesses:
        for key in ("first", "last"):
            access[key] = access[key].isoformat() if access[key] else None
    return {"subject": subject_ref, "accesses": accesses}


@bp.get("/reports/principals/<string:principal_id>")
@bp.input(ReportQuerySchema, location="query", arg_name="query")
@bp.output(PrincipalReportSchema)
@bp.doc(summary="What a principal did and how many subjects it touched", security=SECURITY, responses=[200, *ERRORS])
@requires("audit", "report")
def principal_report(principal_id: str, query: dict[str, Any]) -> dict[str, Any]:
    return reports.principal_activity(get_session(), principal_id, query["time_from"], query["time_to"])


@bp.get("/reports/anomalies")
@bp.input(AnomalyQuerySchema, location="query", arg_name="query")
@bp.output(AnomalyReportSchema)
@bp.doc(
    summary="Principals reading more distinct subjects per hour than the threshold",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("audit", "report")
def anomaly_report(query: dict[str, Any]) -> dict[str, Any]:
    threshold = query["threshold"] or _settings().audit_anomaly_subjects_per_hour
    found = reports.anomalies(get_session(), threshold, query["time_from"], query["time_to"])
    return {
        "threshold": threshold,
        "anomalies": [
            {"principal": a.principal, "hour": a.hour, "distinct_subjects": a.distinct_subjects} for a in found
        ],
    }
