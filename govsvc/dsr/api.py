"""HTTP layer of data-subject requests (``/v1/dsr``) and the OpenDSR v2 facade (``/opendsr/v2``)."""

from __future__ import annotations

import json
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Boolean, Dict, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range
from flask import Response, current_app, request, stream_with_context, url_for

from govsvc.audit.service import record
from govsvc.core.access import current_principal, get_policy_engine, public, requires
from govsvc.core.db import get_db, get_session
from govsvc.core.errors import ServiceError
from govsvc.core.idempotency import idempotent
from govsvc.core.pagination import cursor_int, page
from govsvc.core.pii_guard import random_reference
from govsvc.core.problems import problem_response
from govsvc.core.schemas import PageQuerySchema, QueryBoolean, StrictBoolean, StrictInteger, StrictSchema
from govsvc.dsr import export, letters, opendsr
from govsvc.dsr.domain import Dsr
from govsvc.dsr.models import DsrConnectorRun, DsrRequest, DsrWebhook
from govsvc.dsr.rules import REQUEST_TYPES, REQUESTER_KINDS
from govsvc.dsr.service import DENIAL_REASONS, PAUSE_REASONS, STATUSES, VERIFICATION_METHODS, Intake, Requester
from govsvc.subjects import service as subjects
from govsvc.subjects.api import IdentifierSchema, SubjectRefSchema, field_keys
from govsvc.taxonomy.api import taxonomy_cache

bp = APIBlueprint("dsr", __name__, url_prefix="/v1/dsr", tag="Data-subject requests")
opendsr_bp = APIBlueprint("opendsr", __name__, url_prefix="/opendsr/v2", tag="OpenDSR v2")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 409, 413, 415, 422]


def dsr() -> Dsr:
    return current_app.extensions["govsvc.dsr"]


def actor() -> str:
    return current_principal().principal_id


# -- schemas ---------------------------------------------------------------------------------------------------


class RequesterSchema(StrictSchema):
    kind = String(load_default="subject", validate=OneOf(REQUESTER_KINDS))
    evidence = String(
        load_default=None,
        validate=Length(max=2000),
        metadata={
            "description": "proof of authority (a reference or the document's digest); only its keyed hash is stored"
        },
    )
    guardian = Nested(SubjectRefSchema, load_default=None, allow_none=True)


class RequestCreateSchema(StrictSchema):
    type = String(required=True, validate=OneOf(REQUEST_TYPES))
    subject = Nested(SubjectRefSchema, load_default=None, allow_none=True)
    jurisdictions = List(String(validate=Length(max=16)), load_default=list, validate=Length(max=5))
    channel = String(required=True, validate=Length(min=1, max=32))
    requester = Nested(RequesterSchema, load_default=dict)
    language = String(load_default="en", validate=OneOf(["en", "zh"]))
    purposes = List(String(validate=Length(max=80)), load_default=list, validate=Length(max=50))
    fields = List(String(validate=Length(max=80)), load_default=list, validate=Length(max=100))
    acknowledged = StrictBoolean(
        load_default=False,
        metadata={"description": "the requester was shown the acknowledgement already (e.g. by the privacy portal)"},
    )
    allow_duplicate = StrictBoolean(load_default=False)


class RequestPatchSchema(StrictSchema):
    assignee = String(
        required=True,
        allow_none=True,
        validate=Length(max=80),
        metadata={"description": "an enabled admin user whose role holds dsr:manage (username), or null to unassign"},
    )


class NoteSchema(StrictSchema):
    text = String(required=True, validate=Length(min=1, max=2000))


class DataPointSchema(IdentifierSchema):
    pass


class VerificationSchema(StrictSchema):
    method = String(required=True, validate=OneOf(VERIFICATION_METHODS))
    data_points = List(Nested(DataPointSchema), load_default=list, validate=Length(max=10))
    signed_declaration = StrictBoolean(load_default=False)
    evidence = String(load_default=None, validate=Length(max=2000))
    passed = StrictBoolean(load_default=None, allow_none=True)


class PauseSchema(StrictSchema):
    reason = String(required=True, validate=OneOf(PAUSE_REASONS))
    note = String(load_default=None, validate=Length(max=2000))


class ExtendSchema(StrictSchema):
    reason = String(required=True, validate=Length(min=1, max=500))


class DenySchema(StrictSchema):
    reason = String(required=True, validate=OneOf(DENIAL_REASONS))
    legal_basis = String(required=True, validate=Length(min=1, max=120))
    note = String(load_default=None, validate=Length(max=2000))


class CancelSchema(StrictSchema):
    reason = String(load_default=None, validate=Length(max=500))


class FulfilSchema(StrictSchema):
    fields = Dict(
        keys=String(validate=Length(min=1, max=80)),
        values=String(allow_none=True),
        load_default=dict,
        metadata={"description": "rectification only: field -> corrected value (null deletes)"},
    )
    accept_failures = StrictBoolean(load_default=False)


class ListQuerySchema(PageQuerySchema):
    status = String(load_default=None, validate=OneOf(STATUSES))
    type = String(load_default=None, validate=OneOf(REQUEST_TYPES))
    assignee = String(load_default=None, validate=Length(max=80))
    subject_id = String(load_default=None, validate=Length(max=40))
    overdue = QueryBoolean(load_default=None)


class LetterQuerySchema(StrictSchema):
    language = String(load_default=None, validate=OneOf(["en", "zh"]))


class WebhookCreateSchema(StrictSchema):
    name = String(required=True, validate=Length(min=1, max=64))
    url = String(required=True, validate=Length(min=8, max=500))
    operations = List(
        String(validate=OneOf(["collect", "erase", "rectify", "restrict", "object", "notify"])),
        required=True,
        validate=Length(min=1, max=6),
    )
    role = String(load_default="processor", validate=OneOf(["processor", "recipient"]))
    identifier_kinds = List(String(validate=Length(max=32)), load_default=lambda: ["crm_id"], validate=Length(max=10))
    max_attempts = StrictInteger(load_default=4, validate=Range(min=1, max=10))
    timeout_seconds = StrictInteger(load_default=10, validate=Range(min=1, max=60))


class RequestSchema(Schema):
    request_id = String(required=True)
    subject_id = String(allow_none=True)
    type = String(required=True)
    status = String(required=True)
    jurisdictions = List(String(), required=True)
    requester = Dict(required=True)
    channel = String(required=True)
    source = String(required=True)
    language = String(required=True)
    parameters = Dict(required=True)
    received_at = AwareDateTime(required=True)
    received_local_date = String(required=True)
    deadlines = Dict(required=True, metadata={"description": "each regime's dates and notes; the strictest wins"})
    sla = Dict(required=True)
    verification = Dict(required=True)
    extension = Dict(allow_none=True)
    paused = Boolean(required=True)
    assignee = String(allow_none=True)
    denial = Dict(allow_none=True)
    outcome = Dict(allow_none=True)
    connectors = List(Dict(), required=True)
    repeat_count = Integer(required=True)
    overdue_at = AwareDateTime(allow_none=True)
    closed_at = AwareDateTime(allow_none=True)


class RequestListSchema(Schema):
    items = List(Nested(RequestSchema), required=True)
    next_cursor = String(allow_none=True, required=True)


class FulfilResultSchema(Schema):
    request = Nested(RequestSchema, required=True)
    download = Dict(allow_none=True, metadata={"description": "the one-time download link (shown once)"})
    failed = List(String(), required=True)


class DsrEventSchema(Schema):
    at = AwareDateTime(required=True)
    kind = String(required=True)
    from_status = String(allow_none=True)
    to_status = String(allow_none=True)
    actor = String(allow_none=True)
    text = String(allow_none=True)
    details = Dict(allow_none=True)


class DsrEventListSchema(Schema):
    items = List(Nested(DsrEventSchema), required=True)


class LetterSchema(Schema):
    kind = String(required=True)
    language = String(required=True)
    subject = String(required=True)
    body = String(required=True)


class ConnectorListSchema(Schema):
    items = List(Dict(), required=True)


class WebhookCreatedSchema(Schema):
    connector_id = String(required=True)
    name = String(required=True)
    secret = String(allow_none=True, metadata={"description": "HMAC secret, shown once"})


def request_document(dsr_request: DsrRequest) -> dict[str, Any]:
    session = get_session()
    domain = dsr()
    subject = domain.service.subject_of(session, dsr_request)
    runs = session.scalars(select_runs(dsr_request.pk)).all()
    parameters = domain.service.parameters(dsr_request)
    parameters.pop("status_callback_urls", None)
    return {
        "request_id": dsr_request.request_id,
        "subject_id": subject.subject_id if subject else None,
        "type": dsr_request.request_type,
        "status": dsr_request.status,
        "jurisdictions": domain.service.regimes(dsr_request),
        "requester": {
            "kind": dsr_request.requester_kind,
            "has_evidence": dsr_request.authority_evidence_hash is not None,
        },
        "channel": dsr_request.channel,
        "source": dsr_request.source,
        "language": dsr_request.language,
        "parameters": parameters,
        "received_at": dsr_request.received_at,
        "received_local_date": dsr_request.received_local_date,
        "deadlines": {
            "governing_regime": dsr_request.governing_regime,
            "ack_due_at": dsr_request.ack_due_at.isoformat() if dsr_request.ack_due_at else None,
            "due_at": dsr_request.due_at.isoformat(),
            "max_extended_due_at": dsr_request.max_extended_due_at.isoformat(),
            "regimes": json.loads(dsr_request.schedule),
        },
        "sla": {
            k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in domain.service.sla(dsr_request).items()
        },
        "verification": {
            "level": dsr_request.verification_level,
            "method": dsr_request.verification_method,
            "outcome": dsr_request.verification_outcome,
            "verified_at": dsr_request.verified_at.isoformat() if dsr_request.verified_at else None,
        },
        "extension": {"extended_at": dsr_request.extended_at.isoformat(), "reason": dsr_request.extension_reason}
        if dsr_request.extended_at
        else None,
        "paused": dsr_request.paused,
        "assignee": dsr_request.assignee,
        "denial": {"reason": dsr_request.denial_reason, "legal_basis": dsr_request.denial_legal_basis}
        if dsr_request.denial_reason
        else None,
        "outcome": json.loads(dsr_request.outcome) if dsr_request.outcome else None,
        "connectors": [
            {
                "connector": run.connector,
                "operation": run.operation,
                "status": run.status,
                "attempts": run.attempts,
                "records": run.records,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            }
            for run in runs
        ],
        "repeat_count": dsr_request.repeat_count,
        "overdue_at": dsr_request.overdue_at,
        "closed_at": dsr_request.closed_at,
    }


def select_runs(request_pk: int) -> Any:
    from sqlalchemy import select

    return select(DsrConnectorRun).where(DsrConnectorRun.request_pk == request_pk).order_by(DsrConnectorRun.pk)


def _load(request_id: str) -> DsrRequest:
    return dsr().service.get(get_session(), request_id, for_update=request.method != "GET")


# -- requests ----------------------------------------------------------------------------------------------------


@bp.post("/requests")
@bp.input(RequestCreateSchema, arg_name="body")
@bp.output(RequestSchema, status_code=201)
@bp.doc(
    summary="Receive a data-subject request (access, portability, rectification, erasure, restriction, objection, "
    "consent withdrawal, opt-out of sale/share, limit sensitive data, account cancellation)",
    description="Deadlines come from the jurisdiction profiles (strictest wins); an open request of the same type "
    "for the same subject is a 409 with `existing_request_id` unless `allow_duplicate`.",
    security=SECURITY,
    responses=[201, *ERRORS],
)
@requires("dsr", "create")
@idempotent()
def create_request(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    session = get_session()
    requester = body["requester"]
    guardian = subjects.resolve(session, field_keys(), requester["guardian"]) if requester.get("guardian") else None
    intake = Intake(
        request_type=body["type"],
        channel=body["channel"],
        subject=body["subject"],
        jurisdictions=body["jurisdictions"],
        requester=Requester(requester.get("kind", "subject"), requester.get("evidence"), guardian),
        language=body["language"],
        purposes=body["purposes"],
        fields=body["fields"],
        acknowledged=body["acknowledged"],
        allow_duplicate=body["allow_duplicate"],
    )
    created = dsr().service.create(session, taxonomy_cache().current(session), intake, actor=actor())
    return (
        request_document(created),
        201,
        {"Location": url_for("dsr.get_request", request_id=created.request_id)},
    )


@bp.get("/requests")
@bp.input(ListQuerySchema, location="query", arg_name="query")
@bp.output(RequestListSchema)
@bp.doc(
    summary="The request queue (filter by status, type, assignee, subject, overdue)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "read")
def list_requests(query: dict[str, Any]) -> dict[str, Any]:
    rows = dsr().service.list(
        get_session(),
        status=query["status"],
        request_type=query["type"],
        assignee=query["assignee"],
        subject_id=query["subject_id"],
        overdue=query["overdue"],
        after_pk=cursor_int(query["cursor"]),
        limit=query["limit"],
    )
    items, next_cursor = page(rows, query["limit"], lambda row: {"after": row.pk})
    return {"items": [request_document(row) for row in items], "next_cursor": next_cursor}


@bp.get("/requests/<string:request_id>")
@bp.output(RequestSchema)
@bp.doc(
    summary="One request: status, deadlines, SLA countdown, verification, connectors",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "read")
def get_request(request_id: str) -> dict[str, Any]:
    return request_document(_load(request_id))


@bp.patch("/requests/<string:request_id>")
@bp.input(RequestPatchSchema, arg_name="body")
@bp.output(RequestSchema)
@bp.doc(summary="Assign a request (or unassign with null)", security=SECURITY, responses=[200, *ERRORS])
@requires("dsr", "manage")
def patch_request(request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target = _load(request_id)
    dsr().service.assign(get_session(), target, body["assignee"], actor=actor(), policy=get_policy_engine())
    return request_document(target)


@bp.post("/requests/<string:request_id>/notes")
@bp.input(NoteSchema, arg_name="body")
@bp.output(RequestSchema, status_code=201)
@bp.doc(summary="Add a note (no personal data: it is kept in the request)", security=SECURITY, responses=[201, *ERRORS])
@requires("dsr", "manage")
def add_note(request_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    target = _load(request_id)
    dsr().service.add_note(get_session(), target, body["text"], actor=actor())
    return request_document(target), 201


@bp.get("/requests/<string:request_id>/events")
@bp.output(DsrEventListSchema)
@bp.doc(
    summary="The request's timeline: status changes, notes, verification, pauses",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "read")
def list_events(request_id: str) -> dict[str, Any]:
    target = _load(request_id)
    return {
        "items": [
            {
                "at": event.at,
                "kind": event.kind,
                "from_status": event.from_status,
                "to_status": event.to_status,
                "actor": event.actor,
                "text": event.text,
                "details": json.loads(event.details) if event.details else None,
            }
            for event in dsr().service.events(get_session(), target)
        ]
    }


@bp.post("/requests/<string:request_id>/verification")
@bp.input(VerificationSchema, arg_name="body")
@bp.output(RequestSchema)
@bp.doc(
    summary="Verify the requester: data points matched against what we hold (2 for reasonable, 3 and a signed "
    "declaration for high), account re-authentication, or a document check; only method, outcome and a keyed "
    "evidence hash are stored",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "verify")
def verify_request(request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target = _load(request_id)
    dsr().service.verify(
        get_session(),
        target,
        method=body["method"],
        actor=actor(),
        data_points=body["data_points"],
        signed_declaration=body["signed_declaration"],
        evidence=body["evidence"],
        passed=body["passed"],
    )
    return request_document(target)


def _action(request_id: str, apply: Any) -> dict[str, Any]:
    target = _load(request_id)
    apply(get_session(), target)
    dsr().notify_status(get_session(), target)
    return request_document(target)


@bp.post("/requests/<string:request_id>:acknowledge")
@bp.output(RequestSchema)
@bp.doc(
    summary="Record that the acknowledgement was sent (CCPA: within 10 business days)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "manage")
def acknowledge_request(request_id: str) -> dict[str, Any]:
    return _action(request_id, lambda s, r: dsr().service.acknowledge(s, r, actor=actor()))


@bp.post("/requests/<string:request_id>:pause")
@bp.input(PauseSchema, arg_name="body")
@bp.output(RequestSchema)
@bp.doc(
    summary="Stop the clock while waiting for identity or clarification (only where every regime allows it)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "manage")
def pause_request(request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return _action(request_id, lambda s, r: dsr().service.pause(s, r, body["reason"], actor=actor(), note=body["note"]))


@bp.post("/requests/<string:request_id>:resume")
@bp.output(RequestSchema)
@bp.doc(summary="Restart the clock; the due dates move by the time paused", security=SECURITY, responses=[200, *ERRORS])
@requires("dsr", "manage")
def resume_request(request_id: str) -> dict[str, Any]:
    return _action(request_id, lambda s, r: dsr().service.resume(s, r, actor=actor()))


@bp.post("/requests/<string:request_id>:extend")
@bp.input(ExtendSchema, arg_name="body")
@bp.output(RequestSchema)
@bp.doc(
    summary="Extend the deadline (once, before the first due date, with a reason)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "manage")
def extend_request(request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return _action(request_id, lambda s, r: dsr().service.extend(s, r, body["reason"], actor=actor()))


@bp.post("/requests/<string:request_id>:deny")
@bp.input(DenySchema, arg_name="body")
@bp.output(RequestSchema)
@bp.doc(
    summary="Deny with a reason (Data Rights Protocol codes) and its legal basis",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "manage")
def deny_request(request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return _action(
        request_id,
        lambda s, r: dsr().service.deny(s, r, body["reason"], body["legal_basis"], actor=actor(), note=body["note"]),
    )


@bp.post("/requests/<string:request_id>:cancel")
@bp.input(CancelSchema, arg_name="body")
@bp.output(RequestSchema)
@bp.doc(summary="Cancel (the subject withdrew the request)", security=SECURITY, responses=[200, *ERRORS])
@requires("dsr", "cancel")
def cancel_request(request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return _action(request_id, lambda s, r: dsr().service.cancel(s, r, actor=actor(), reason=body["reason"]))


@bp.post("/requests/<string:request_id>:fulfil")
@bp.input(FulfilSchema, arg_name="body")
@bp.output(FulfilResultSchema)
@bp.doc(
    summary="Fulfil a verified request across the vault, the consent ledger, the audit log and the apps",
    description="Access and portability return a one-time download link (shown once). A failed connector leaves "
    "the request in progress; calling again retries what did not finish (`accept_failures` closes it as "
    "partially completed).",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "fulfil")
def fulfil_request(request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    get_session().rollback()  # no transaction held while apps are called: each step commits on its own
    result = dsr().fulfilment.run(
        get_db(),
        request_id,
        actor=actor(),
        rectification=body["fields"] or None,
        accept_failures=body["accept_failures"],
    )
    download = dict(result.download) if result.download else None
    if download:
        download["expires_at"] = download["expires_at"].isoformat()
    return {"request": request_document(_load(request_id)), "download": download, "failed": result.failed}


@bp.get("/requests/<string:request_id>/letters/<string:kind>")
@bp.input(LetterQuerySchema, location="query", arg_name="query")
@bp.output(LetterSchema)
@bp.doc(
    summary="A response letter (English or Simplified Chinese) with reasons and the complaint channel",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("dsr", "read")
def get_letter(request_id: str, kind: str, query: dict[str, Any]) -> dict[str, str]:
    settings = current_app.config["GOVSVC_SETTINGS"]
    return letters.render(
        dsr().rules, _load(request_id), kind, query["language"], export_hours=settings.dsr_export_ttl_hours
    )


# -- connectors --------------------------------------------------------------------------------------------------


@bp.get("/connectors")
@bp.output(ConnectorListSchema)
@bp.doc(summary="The connectors fulfilment uses and their status", security=SECURITY, responses=[200, *ERRORS])
@requires("dsr_connectors", "read")
def list_connectors() -> dict[str, Any]:
    session = get_session()
    items = [connector.status(session) for connector in dsr().registry.connectors(session)]
    for item in items:
        for key, value in list(item.items()):
            if hasattr(value, "isoformat"):
                item[key] = value.isoformat()
    return {"items": items}


@bp.post("/connectors/webhooks")
@bp.input(WebhookCreateSchema, arg_name="body")
@bp.output(WebhookCreatedSchema, status_code=201)
@bp.doc(
    summary="Register an app reached by signed webhooks; its HMAC secret is shown once",
    security=SECURITY,
    responses=[201, *ERRORS],
)
@requires("dsr_connectors", "write")
@idempotent(redact=("secret",))
def create_webhook(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    session = get_session()
    created = register_webhook(session, body)
    record(
        session,
        "config.changed",
        object_ref=f"dsr_connector:{created['connector_id']}",
        details={"operations": sorted(body["operations"]), "role": body["role"]},
    )
    return created, 201


def register_webhook(session: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Store a webhook connector with a new random secret (returned once)."""
    import secrets as random_secrets

    from sqlalchemy import select

    from govsvc.core.errors import ConflictError
    from govsvc.dsr.webhooks import check_url

    check_url(body["url"])
    if session.scalar(select(DsrWebhook.pk).where(DsrWebhook.name == body["name"])) is not None:
        raise ConflictError("A connector with this name exists.")
    connector_id = random_reference("whk_")
    secret = "whsec_" + random_secrets.token_urlsafe(32)
    session.add(
        DsrWebhook(
            connector_id=connector_id,
            name=body["name"],
            url=body["url"],
            secret_wrapped=dsr().secrets.wrap(secret, connector_id),
            operations=json.dumps(sorted(set(body["operations"]))),
            role=body["role"],
            identifier_kinds=json.dumps(body["identifier_kinds"]),
            max_attempts=body["max_attempts"],
            timeout_seconds=body["timeout_seconds"],
            enabled=True,
        )
    )
    session.flush()
    return {"connector_id": connector_id, "name": body["name"], "secret": secret}


@bp.delete("/connectors/webhooks/<string:connector_id>")
@bp.output({}, status_code=204)
@bp.doc(summary="Disable a webhook connector", security=SECURITY, responses=[204, *ERRORS])
@requires("dsr_connectors", "write")
def delete_webhook(connector_id: str) -> tuple[str, int]:
    from sqlalchemy import select

    from govsvc.core.errors import NotFoundError

    session = get_session()
    row = session.scalar(select(DsrWebhook).where(DsrWebhook.connector_id == connector_id))
    if row is None:
        raise NotFoundError("No such connector.")
    row.enabled = False
    record(session, "config.changed", object_ref=f"dsr_connector:{connector_id}", reason_code="disabled")
    return "", 204


# -- the bundle schema and downloads (public: the subject has no API key) ------------------------------------------


@bp.get("/schemas/export-bundle.json")
@bp.doc(
    summary="The JSON Schema of export bundles (public)",
    responses={
        200: {"description": "JSON Schema", "content": {"application/schema+json": {"schema": {"type": "object"}}}}
    },
)
@public
def bundle_schema() -> Response:
    return Response(json.dumps(export.bundle_schema(), indent=2), mimetype="application/schema+json")


@bp.get("/downloads/<string:token>")
@bp.doc(
    summary="Download an export bundle (ZIP) with its one-time link; expired, used or unknown links are 410",
    responses=[200, 410],
)
@public
def download(token: str) -> Response:
    database = get_db()
    get_session().rollback()
    if len(token) > 200:
        return problem_response("gone", "This download link has expired, was used already, or is not valid.")
    export_pk, export_id, secret, request_id = export.claim(database, token)
    response = Response(
        stream_with_context(export.stream(database, export_pk, export_id, secret)), mimetype="application/zip"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{request_id}.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response


# -- OpenDSR v2 --------------------------------------------------------------------------------------------------


_OPENDSR_ERROR = {
    "description": "An OpenDSR error document",
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object"}}}
        }
    },
}


def _opendsr_responses(success: int, *statuses: int) -> dict[int, Any]:
    """OpenDSR's own errors (400, 404) are its JSON error document; the guard's (401, 403) are problems."""
    documented: dict[int, Any] = {success: "Success"}
    for status in statuses:
        documented[status] = _OPENDSR_ERROR if status in (400, 404) else {401: "Unauthorized", 403: "Forbidden"}[status]
    return documented


def _opendsr_error(error: Exception) -> Response:
    if isinstance(error, opendsr.OpenDsrError):
        document, status = error.document, error.code
    else:
        assert isinstance(error, ServiceError)
        status = 404 if error.status == 404 else 400
        document = {
            "error": {
                "code": status,
                "message": error.detail,
                "errors": [{"domain": "OpenDSR", "reason": error.slug, "message": error.detail}],
            }
        }
    return Response(json.dumps(document), status=status, mimetype="application/json")


@opendsr_bp.get("/discovery")
@opendsr_bp.doc(summary="OpenDSR discovery: identities, request types, processor certificate (public)")
@public
def opendsr_discovery() -> dict[str, Any]:
    return opendsr.discovery(request.host_url.rstrip("/"))


@opendsr_bp.get("/processor-certificate.pem")
@opendsr_bp.doc(
    summary="The certificate whose key signs status callbacks (public)",
    responses={
        200: {"description": "PEM certificate", "content": {"application/x-pem-file": {"schema": {"type": "string"}}}}
    },
)
@public
def opendsr_certificate() -> Response:
    session = get_session()
    _key, certificate = opendsr.processor_key(session, dsr().secrets, dsr().domain)
    session.commit()
    return Response(certificate, mimetype="application/x-pem-file")


@opendsr_bp.post("/requests")
@opendsr_bp.doc(
    summary="OpenDSR create (access, portability, erasure)",
    security=SECURITY,
    responses=_opendsr_responses(201, 400, 401, 403),
)
@requires("opendsr", "create")
def opendsr_create() -> Response:
    session = get_session()
    raw = request.get_data(cache=True)
    try:
        parsed = opendsr.parse_create(request.get_json(silent=True))
        subject = None
        for identity in parsed["identities"]:
            try:
                subject = subjects.resolve(session, field_keys(), identity)
                break
            except ServiceError:
                continue
        intake = Intake(
            request_type=parsed["type"],
            channel="opendsr",
            subject={"subject_id": subject.subject_id} if subject else None,
            jurisdictions=[] if subject else [parsed["regulation"]],
            source="opendsr",
            external_id=parsed["external_id"],
            received_at=None,
            status_callback_urls=parsed["callbacks"],
        )
        created = dsr().service.create(session, taxonomy_cache().current(session), intake, actor=actor())
    except (opendsr.OpenDsrError, ServiceError) as error:
        session.rollback()
        return _opendsr_error(error)
    key, _certificate = opendsr.processor_key(session, dsr().secrets, dsr().domain)
    encoded = __import__("base64").b64encode(raw).decode()
    dsr().notify_status(session, created)
    body = {
        "controller_id": current_principal().client_id,
        "expected_completion_time": created.due_at.isoformat(),
        "received_time": created.received_at.isoformat(),
        "encoded_request": encoded,
        "subject_request_id": created.external_id,
        "processor_signature": opendsr.sign(key, encoded.encode()),
    }
    return Response(json.dumps(body), status=201, mimetype="application/json")


def _by_external(subject_request_id: str) -> DsrRequest:
    from sqlalchemy import select

    from govsvc.core.errors import NotFoundError

    found = get_session().scalar(select(DsrRequest).where(DsrRequest.external_id == subject_request_id[:80]))
    if found is None or found.created_by != current_principal().principal_id:
        raise NotFoundError("No such request.")
    return found


@opendsr_bp.get("/requests/<string:subject_request_id>")
@opendsr_bp.doc(summary="OpenDSR status", security=SECURITY, responses=_opendsr_responses(200, 401, 403, 404))
@requires("opendsr", "read")
def opendsr_status(subject_request_id: str) -> Response:
    try:
        found = _by_external(subject_request_id)
    except ServiceError as error:
        return _opendsr_error(error)
    document = opendsr.status_document(found, current_principal().client_id, dsr().domain)
    return Response(json.dumps(document), mimetype="application/json")


@opendsr_bp.delete("/requests/<string:subject_request_id>")
@opendsr_bp.doc(
    summary="OpenDSR cancel (only while pending)",
    security=SECURITY,
    responses=_opendsr_responses(202, 400, 401, 403, 404),
)
@requires("opendsr", "cancel")
def opendsr_cancel(subject_request_id: str) -> Response:
    session = get_session()
    try:
        found = _by_external(subject_request_id)
        if opendsr.STATUS_MAP[found.status] != "pending":
            raise opendsr.OpenDsrError("Only a pending request can be cancelled.")
        dsr().service.cancel(session, found, actor=actor(), reason="cancelled by the controller (OpenDSR)")
        dsr().notify_status(session, found)
    except (opendsr.OpenDsrError, ServiceError) as error:
        session.rollback()
        return _opendsr_error(error)
    body = {
        "controller_id": current_principal().client_id,
        "subject_request_id": found.external_id,
        "received_time": found.received_at.isoformat(),
        "api_version": opendsr.API_VERSION,
    }
    return Response(json.dumps(body), status=202, mimetype="application/json")
