"""HTTP layer of the customer profile vault. Values travel only in bodies; reads apply the decision's obligations."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Dict, Integer, List, Nested, String
from apiflask.validators import Length
from flask import current_app

from govsvc.audit.service import record, write_pending
from govsvc.core.access import current_principal, requires
from govsvc.core.db import autocommit, get_session, records_on_read
from govsvc.core.pii_guard import check_justification, random_reference
from govsvc.core.schemas import StrictSchema
from govsvc.subjects import service as subjects
from govsvc.taxonomy.api import taxonomy_cache
from govsvc.vault.erasure import shred_profile
from govsvc.vault.service import Vault

bp = APIBlueprint("vault", __name__, url_prefix="/v1/vault", tag="Profile vault")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 410, 413, 415, 422]


def vault() -> Vault:
    return current_app.extensions["govsvc.vault"]


class ProfileWriteSchema(StrictSchema):
    fields = Dict(
        keys=String(validate=Length(min=1, max=80)),
        values=String(allow_none=True),
        required=True,
        metadata={"description": "field -> value (null deletes the field); field names from GET /v1/taxonomy"},
    )
    justification = String(load_default=None, validate=Length(max=500))


class ProfileReadQuerySchema(StrictSchema):
    purpose = String(required=True, validate=Length(min=1, max=80))
    justification = String(load_default=None, validate=Length(max=500))


class HistoryQuerySchema(StrictSchema):
    justification = String(required=True, validate=Length(max=500))


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
    justification = check_justification(body["justification"], required=False)
    subject = subjects.get_subject(session, subject_id)
    changes = vault().write(
        session,
        taxonomy_cache().current(session),
        subject,
        body["fields"],
        actor=current_principal().principal_id,
        justification=justification,
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
@records_on_read
@autocommit
def get_profile(subject_id: str, query: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    subject = subjects.get_subject_key(session, subject_id)
    principal = current_principal()
    views = vault().read_for_purpose(
        session,
        current_app.extensions["govsvc.decisions"],
        subject,
        purpose=query["purpose"],
        role=principal.role,
        principal_id=principal.principal_id,
        justification=query["justification"],
    )
    write_pending(session)  # its audit events now (autocommit: one self-committing INSERT), before plaintext leaves
    return {
        "subject_id": subject.subject_id,
        "purpose": query["purpose"],
        "fields": {name: vars(view) for name, view in views.items()},
    }


@bp.get("/subjects/<string:subject_id>/profile/history")
@bp.input(HistoryQuerySchema, location="query", arg_name="query")
@bp.output(ProfileHistorySchema)
@bp.doc(
    summary="Previous values of every field (rectification history); needs a justification, audited",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("vault", "history")
@records_on_read
def get_history(subject_id: str, query: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    subject = subjects.get_subject(session, subject_id)
    return {
        "subject_id": subject.subject_id,
        "entries": vault().history(session, subject, justification=query["justification"]),
    }


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
    description="Refused (409, naming the holds) while a legal hold keeps any of the profile. The deletion ledger "
    "records the erasure, so that a restored backup is shredded again (govsvc retention replay-ledger).",
    security=SECURITY,
    responses=[200, 409, *ERRORS],
)
@requires("vault", "erase")
def delete_profile(subject_id: str) -> dict[str, Any]:
    session = get_session()
    subject = subjects.get_subject(session, subject_id)
    result = shred_profile(session, vault(), subject, run_id=random_reference("shred_", 8))
    return {"subject_id": subject.subject_id, **result}
