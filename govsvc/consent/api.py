"""HTTP layer of the consent ledger: one call to give, refuse, withdraw or renew; state and history per subject."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Boolean, Dict, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range, Regexp
from flask import current_app, request

from govsvc.consent import receipts, service
from govsvc.consent.models import ConsentEvent
from govsvc.core.access import current_principal, public, requires
from govsvc.core.db import get_session
from govsvc.core.idempotency import idempotent
from govsvc.core.pagination import cursor_int, page
from govsvc.core.schemas import PageQuerySchema, StrictInteger, StrictSchema
from govsvc.subjects import service as subjects
from govsvc.subjects.api import SubjectRefSchema, field_keys
from govsvc.subjects.models import Subject
from govsvc.taxonomy.api import taxonomy_cache

bp = APIBlueprint("consent", __name__, url_prefix="/v1", tag="Consent")
wellknown_bp = APIBlueprint("wellknown", __name__, tag="Well-known")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 409, 413, 415, 422]


class NoticeSchema(StrictSchema):
    id = String(required=True, validate=Length(min=1, max=80))
    version = String(required=True, validate=Length(min=1, max=40))
    sha256 = String(required=True, validate=Regexp(r"^[0-9a-f]{64}$", error="64 lower-case hex digits"))
    language = String(required=True, validate=Regexp(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", error="a BCP 47 tag"))


class ItemSchema(StrictSchema):
    purpose = String(required=True, validate=Length(min=1, max=80))
    scope = String(
        load_default="",
        validate=Length(max=120),
        metadata={"description": "'' (the purpose), category:<key>, recipient:<key> or xb:<country>"},
    )
    purpose_version = StrictInteger(load_default=None, validate=Range(min=1))


class ConsentActSchema(StrictSchema):
    subject = Nested(SubjectRefSchema, required=True)
    event = String(required=True, validate=OneOf(list(service.EVENT_TYPES)))
    items = List(Nested(ItemSchema), required=True, validate=Length(min=1, max=service.MAX_ITEMS))
    consent_type = String(load_default=None, validate=OneOf(sorted(service.CONSENT_TYPES)))
    notice = Nested(NoticeSchema, load_default=None)
    channel = String(required=True, validate=Length(min=1, max=32))
    actor = String(load_default="subject", validate=OneOf(sorted(service.ACTORS)))
    actor_ref = String(load_default=None, validate=Length(max=80))
    evidence_ref = String(load_default=None, validate=Length(max=200))
    valid_until = AwareDateTime(load_default=None)


class ConsentEventSchema(Schema):
    event_id = String(required=True)
    purpose = String(required=True)
    purpose_version = Integer(required=True)
    scope = String(required=True)
    event = String(required=True)
    consent_type = String(allow_none=True)
    channel = String(required=True)
    actor = String(required=True)
    source = String(required=True)
    notice_id = String(allow_none=True)
    notice_version = String(allow_none=True)
    language = String(allow_none=True)
    valid_until = AwareDateTime(allow_none=True)
    recorded_at = AwareDateTime(required=True)


class ActResultSchema(Schema):
    subject_id = String(required=True)
    events = List(Nested(ConsentEventSchema), required=True)
    gpc_opt_out = Boolean(required=True, metadata={"description": "a Sec-GPC: 1 header also recorded an opt-out"})
    receipts = List(String(), required=True, metadata={"description": "signed receipts (JWS), one per act"})


class ReceiptSchema(Schema):
    receipt = String(required=True, metadata={"description": "compact JWS (EdDSA); verify with the published JWKS"})


class JwksSchema(Schema):
    keys = List(Dict(), required=True)


class StateSchema(Schema):
    purpose = String(required=True)
    scope = String(required=True)
    status = String(required=True)
    purpose_version = Integer(required=True)
    consent_type = String(allow_none=True)
    source = String(required=True)
    valid_until = AwareDateTime(allow_none=True)
    updated_at = AwareDateTime(required=True)


class StateListSchema(Schema):
    subject_id = String(required=True)
    consents = List(Nested(StateSchema), required=True)


class HistorySchema(Schema):
    items = List(Nested(ConsentEventSchema), required=True)
    next_cursor = String(allow_none=True, required=True)


def event_document(event: ConsentEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "purpose": event.purpose_key,
        "purpose_version": event.purpose_version,
        "scope": event.scope,
        "event": event.event_type,
        "consent_type": event.consent_type,
        "channel": event.channel,
        "actor": event.actor,
        "source": event.source,
        "notice_id": event.notice_id,
        "notice_version": event.notice_version,
        "language": event.language,
        "valid_until": event.valid_until,
        "recorded_at": event.recorded_at,
    }


@bp.post("/consents")
@bp.input(ConsentActSchema, arg_name="body")
@bp.output(ActResultSchema, status_code=201)
@bp.doc(
    summary="Give, refuse, withdraw, renew or expire consent (one act)",
    description="Withdrawing uses this same call and needs no reason. A `Sec-GPC: 1` header also records an "
    "opt-out of sale/share (`source=gpc`). Items needing separate consent (PIPL 单独同意) must each be their "
    "own act.",
    security=SECURITY,
    responses=[201, *ERRORS],
)
@requires("consents", "write")
@idempotent()
def record_consent(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    session = get_session()
    subject = subjects.resolve(session, field_keys(), body["subject"])
    taxonomy = taxonomy_cache().current(session)
    notice = body["notice"] or {}
    act = service.ConsentAct(
        event_type=body["event"],
        items=[service.ConsentItem(i["purpose"], i["scope"], i["purpose_version"]) for i in body["items"]],
        channel=body["channel"],
        actor=body["actor"],
        consent_type=body["consent_type"],
        notice_id=notice.get("id"),
        notice_version=notice.get("version"),
        notice_sha256=notice.get("sha256"),
        language=notice.get("language"),
        actor_ref=body["actor_ref"],
        evidence_ref=body["evidence_ref"],
        valid_until=body["valid_until"],
    )
    principal = current_principal().principal_id
    events = service.record_act(session, field_keys(), taxonomy, subject, act, recorded_by=principal)
    receipts = [_receipt(session, taxonomy, subject, events)]
    gpc = request.headers.get("Sec-GPC", "").strip() == "1"
    if gpc:
        given = {item.purpose for item in act.items} if act.event_type == "given" else set()
        opt_out = service.gpc_opt_out_act(taxonomy, act.channel, exclude=given)
        if opt_out is not None:
            gpc_events = service.record_act(session, field_keys(), taxonomy, subject, opt_out, recorded_by=principal)
            receipts.append(_receipt(session, taxonomy, subject, gpc_events))
            events += gpc_events
    result = {
        "subject_id": subject.subject_id,
        "events": [event_document(e) for e in events],
        "gpc_opt_out": gpc,
        "receipts": receipts,
    }
    return result, 201


def _receipt(session: Any, taxonomy: Any, subject: Any, events: list[ConsentEvent]) -> str:
    settings = current_app.config["GOVSVC_SETTINGS"]
    claims = receipts.receipt_claims(taxonomy, taxonomy_cache(), subject, events, settings.controller_name)
    return receipts.sign(session, settings.secret_key, claims)


@bp.get("/consents/<string:event_id>/receipt")
@bp.output(ReceiptSchema)
@bp.doc(summary="A signed receipt of one consent event", security=SECURITY, responses=[200, *ERRORS])
@requires("consents", "read")
def get_receipt(event_id: str) -> dict[str, str]:
    session = get_session()
    event = service.get_event(session, event_id)
    subject = session.get(Subject, event.subject_pk)
    return {"receipt": _receipt(session, taxonomy_cache().current(session), subject, [event])}


@wellknown_bp.get("/.well-known/govsvc/consent-receipt-keys")
@wellknown_bp.output(JwksSchema)
@wellknown_bp.doc(summary="Public keys (JWKS) that verify consent receipts, current and retired")
@public
def receipt_keys() -> dict[str, Any]:
    return receipts.jwks(get_session())


@bp.get("/subjects/<string:subject_id>/consents")
@bp.output(StateListSchema)
@bp.doc(summary="The consents in force for a subject", security=SECURITY, responses=[200, *ERRORS])
@requires("consents", "read")
def list_states(subject_id: str) -> dict[str, Any]:
    session = get_session()
    subject = subjects.get_subject(session, subject_id)
    return {
        "subject_id": subject.subject_id,
        "consents": [
            {
                "purpose": row.purpose_key,
                "scope": row.scope,
                "status": row.status,
                "purpose_version": row.purpose_version,
                "consent_type": row.consent_type,
                "source": row.source,
                "valid_until": row.valid_until,
                "updated_at": row.updated_at,
            }
            for row in service.current_states(session, subject)
        ],
    }


@bp.get("/subjects/<string:subject_id>/consents/history")
@bp.input(PageQuerySchema, location="query", arg_name="query")
@bp.output(HistorySchema)
@bp.doc(summary="Every consent event of a subject, oldest first", security=SECURITY, responses=[200, *ERRORS])
@requires("consents", "read")
def consent_history(subject_id: str, query: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    subject = subjects.get_subject(session, subject_id)
    rows = service.history(session, subject, after_pk=cursor_int(query["cursor"]), limit=query["limit"])
    items, next_cursor = page(rows, query["limit"], lambda event: {"after": event.pk})
    return {"items": [event_document(e) for e in items], "next_cursor": next_cursor}
