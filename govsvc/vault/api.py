"""HTTP layer of the customer profile vault. Values travel only in bodies; reads apply the decision's obligations."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Dict, Integer, List, Nested, String
from apiflask.validators import Length
from flask import current_app

from govsvc.audit.service import record
from govsvc.core.access import current_principal, requires
from govsvc.core.db import get_session
from govsvc.core.errors import KeyDestroyed, ServiceError, ValidationFailed
from govsvc.core.pii_guard import pii_kind
from govsvc.core.schemas import StrictSchema
from govsvc.decisions.service import DecisionEngine, DecisionRequest
from govsvc.subjects import service as subjects
from govsvc.taxonomy.api import taxonomy_cache
from govsvc.vault.service import Vault

bp = APIBlueprint("vault", __name__, url_prefix="/v1/vault", tag="Profile vault")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 410, 413, 415, 422]


def vault() -> Vault:
    return current_app.extensions["govsvc.vault"]


def check_justification(justification: str | None, *, required: bool) -> None:
    """A justification is required for plaintext of L3 data; it is audited, so it must not carry personal data."""
    if justification is None:
        if required:
            raise ValidationFailed(
                "Reading L3 data in plaintext needs a justification.",
                errors=[{"field": "justification", "message": "say why (a ticket or case reference)"}],
            )
        return
    if pii_kind(justification) is not None:
        raise ValidationFailed(
            "The justification is audited and must not contain personal data.",
            errors=[{"field": "justification", "message": "refer to a case or ticket, not to a person"}],
        )


class ProfileWriteSchema(StrictSchema):
    fields = Dict(
        keys=String(validate=Length(min=1, max=80)),
        values=String(allow_none=True),
        required=True,
        metadata={"description": "field -> value (null deletes the field); field names from GET /v1/taxonomy"},
    )
    justification = String(load_default=None, validate=Length(min=3, max=500))


class ProfileReadQuerySchema(StrictSchema):
    purpose = String(required=True, validate=Length(min=1, max=80))
    justification = String(load_default=None, validate=Length(min=3, max=500))


class FieldChangeSchema(Schema):
    field = String(required=True)
    change = String(required=True, metadata={"description": "created, replaced, deleted or unchanged"})


class WriteResultSchema(Schema):
    subject_id = String(required=True)
    changes = List(Nested(FieldChangeSchema), required=True)


class FieldOutSchema(Schema):
    value = String(allow_none=True)
    treatment = String(required=True, metadata={"description": "show, mask:<profile>, tokenize or withhold"})
    reasons = List(String(), required=True, metadata={"description": "why the decision withholds it, if it does"})
    decision_id = String(required=True)
    category = String(required=True)
    level = String(required=True)
    version = Integer(required=True)
    updated_at = AwareDateTime(required=True)


class ProfileSchema(Schema):
    subject_id = String(required=True)
    purpose = String(required=True)
    fields = Dict(keys=String(), values=Nested(FieldOutSchema), required=True)


class ProfileHistoryEntrySchema(Schema):
    field = String(required=True)
    version = Integer(required=True)
    change = String(required=True)
    value = String(allow_none=True)
    justification = String(allow_none=True)
    changed_at = AwareDateTime(required=True)
    changed_by = String(allow_none=True)


class ProfileHistorySchema(Schema):
    subject_id = String(required=True)
    entries = List(Nested(ProfileHistoryEntrySchema), required=True)


class SearchSchema(StrictSchema):
    field = String(required=True, validate=Length(min=1, max=80))
    value = String(required=True, validate=Length(min=1, max=200))


class SearchResultSchema(Schema):
    subject_ids = List(String(), required=True)


class ShredResultSchema(Schema):
    subject_id = String(required=True)
    key_versions_destroyed = Integer(required=True)
    fields = Integer(required=True)
    identifiers_removed = Integer(required=True)


def _write(subject_id: str, body: dict[str, Any], *, replace_all: bool) -> dict[str, Any]:
    session = get_session()
    check_justification(body["justification"], required=False)
    subject = subjects.get_subject(session, subject_id)
    changes = vault().write(
        session,
        taxonomy_cache().current(session),
        subject,
        body["fields"],
        actor=current_principal().principal_id,
        justification=body["justification"],
        replace_all=replace_all,
    )
    changed = sorted(c.field for c in changes if c.change != "unchanged")
    if changed:
        record(
            session,
            "vault.updated",
            subject_ref=subject.subject_id,
            details={"fields": changed, "changes": sorted({c.change for c in changes if c.change != "unchanged"})},
        )
    return {"subject_id": subject.subject_id, "changes": [{"field": c.field, "change": c.change} for c in changes]}


@bp.put("/subjects/<string:subject_id>/profile")
@bp.input(ProfileWriteSchema, arg_name="body")
@bp.output(WriteResultSchema)
@bp.doc(
    summary="Create or replace a subject's profile (fields not given are deleted)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("vault", "write")
def put_profile(subject_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return _write(subject_id, body, replace_all=True)


@bp.patch("/subjects/<string:subject_id>/profile")
@bp.input(ProfileWriteSchema, arg_name="body")
@bp.output(WriteResultSchema)
@bp.doc(
    summary="Rectify some fields (the previous values are kept in the history)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("vault", "write")
def patch_profile(subject_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return _write(subject_id, body, replace_all=False)


@bp.get("/subjects/<string:subject_id>/profile")
@bp.input(ProfileReadQuerySchema, location="query", arg_name="query")
@bp.output(ProfileSchema)
@bp.doc(
    summary="Read a profile for a purpose: each field shown, masked, tokenised or withheld as its decision says",
    description="One decision per field (withheld fields carry the decision's reason codes). Plaintext of L3 "
    "data needs a justification and is audited as data.unmasked.",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("vault", "read")
def get_profile(subject_id: str, query: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    subject = subjects.get_subject(session, subject_id)
    rows = vault().fields(session, subject)
    principal = current_principal()
    engine: DecisionEngine = current_app.extensions["govsvc.decisions"]
    decisions = engine.decide_each(  # one decision per field, read in one round trip
        session,
        [
            DecisionRequest(
                subject={"subject_id": subject.subject_id},
                action="read",
                purpose=query["purpose"],
                roles=(principal.role,),
                principal_id=principal.principal_id,
                fields=(row.field,),
            )
            for row in rows
        ],
    )
    for outcome in decisions:
        if isinstance(outcome, ServiceError):
            raise outcome
    by_field = {row.field: outcome for row, outcome in zip(rows, decisions, strict=True)}
    treatments = {
        name: decision.obligations[name] if decision.allowed else "withhold" for name, decision in by_field.items()
    }
    shown_l3 = [row for row in rows if row.level == "L3" and treatments[row.field] == "show"]
    check_justification(query["justification"], required=bool(shown_l3))
    try:
        stored = vault().read(session, subject, rows)
    except KeyDestroyed:
        raise KeyDestroyed("This subject was erased by crypto-shredding; the profile cannot be read.") from None
    fields: dict[str, Any] = {}
    for item in stored:
        decision = by_field[item.field]
        value, treatment = vault().apply(item, treatments[item.field])
        fields[item.field] = {
            "value": value,
            "treatment": treatment,
            "reasons": sorted({reason.code for reason in decision.reasons}),
            "decision_id": decision.decision_id,
            "category": item.category,
            "level": item.level,
            "version": item.version,
            "updated_at": item.updated_at,
        }
    if shown_l3:
        record(
            session,
            "data.unmasked",
            subject_ref=subject.subject_id,
            purpose=query["purpose"],
            data_categories=sorted({row.category for row in shown_l3}),
            details={
                "fields": sorted(row.field for row in shown_l3),
                "justification": query["justification"],
                "via": "vault",
            },
        )
    return {"subject_id": subject.subject_id, "purpose": query["purpose"], "fields": fields}


@bp.get("/subjects/<string:subject_id>/profile/history")
@bp.output(ProfileHistorySchema)
@bp.doc(summary="Previous values of every field (rectification history)", security=SECURITY, responses=[200, *ERRORS])
@requires("vault", "history")
def get_history(subject_id: str) -> dict[str, Any]:
    session = get_session()
    subject = subjects.get_subject(session, subject_id)
    entries = vault().history(session, subject)
    record(
        session,
        "data.unmasked",
        subject_ref=subject.subject_id,
        details={"via": "vault.history", "entries": len(entries)},
    )
    return {"subject_id": subject.subject_id, "entries": entries}


@bp.post("/profiles:search")
@bp.input(SearchSchema, arg_name="body")
@bp.output(SearchResultSchema)
@bp.doc(
    summary="Subjects whose searchable field equals a value (blind index; the value stays out of the URL)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("vault", "read")
def search(body: dict[str, Any]) -> dict[str, Any]:
    return {"subject_ids": vault().search(get_session(), body["field"], body["value"])}


@bp.delete("/subjects/<string:subject_id>/profile")
@bp.output(ShredResultSchema)
@bp.doc(
    summary="Erase a subject by crypto-shredding: destroy its data keys, so no copy of its ciphertext can be read",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("vault", "erase")
def delete_profile(subject_id: str) -> dict[str, Any]:
    session = get_session()
    subject = subjects.get_subject(session, subject_id)
    result = vault().shred(session, subject)
    record(
        session,
        "key.destroyed",
        subject_ref=subject.subject_id,
        object_ref=f"key:subject:{subject.subject_id}",
        details=result,
    )
    return {"subject_id": subject.subject_id, **result}
