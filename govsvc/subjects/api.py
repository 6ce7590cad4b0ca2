"""HTTP layer of data subjects. Identifier values travel only in request bodies, never in URLs."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Date, List, Nested, String
from apiflask.validators import Length
from flask import current_app, url_for

from govsvc.audit.service import record
from govsvc.core.access import requires
from govsvc.core.db import get_session
from govsvc.core.idempotency import idempotent
from govsvc.core.schemas import StrictSchema
from govsvc.crypto.service import FieldKeys
from govsvc.subjects import service
from govsvc.subjects.models import Subject
from govsvc.taxonomy.api import taxonomy_cache

bp = APIBlueprint("subjects", __name__, url_prefix="/v1", tag="Subjects")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 409, 413, 415, 422]


def field_keys() -> FieldKeys:
    return current_app.extensions["govsvc.field_keys"]


class IdentifierSchema(StrictSchema):
    kind = String(
        required=True,
        validate=Length(min=1, max=32),
        metadata={"description": "crm_id, email, phone, wechat_openid, wechat_unionid, member_no, ..."},
    )
    value = String(required=True, validate=Length(min=1, max=200))
    system = String(load_default="", validate=Length(max=64), metadata={"description": "e.g. crm, web, store"})


class NewIdentifierSchema(IdentifierSchema):
    """The body that adds an identifier (its own OpenAPI component, apart from the nested identifiers)."""


class SubjectRefSchema(StrictSchema):
    """A subject by its id, or by any identifier."""

    subject_id = String(load_default=None, validate=Length(max=40))
    kind = String(load_default=None, validate=Length(max=32))
    value = String(load_default=None, validate=Length(max=200))
    system = String(load_default="", validate=Length(max=64))


class SubjectLookupSchema(SubjectRefSchema):
    """The body of a subject lookup (its own OpenAPI component, apart from the nested subject references)."""


class SubjectCreateSchema(StrictSchema):
    identifiers = List(Nested(IdentifierSchema), required=True, validate=Length(min=1, max=20))
    jurisdictions = List(String(validate=Length(max=16)), required=True, validate=Length(min=1, max=10))
    birth_date = Date(load_default=None, allow_none=True)
    guardian = Nested(SubjectRefSchema, load_default=None, allow_none=True)


class SubjectPatchSchema(StrictSchema):
    jurisdictions = List(String(validate=Length(max=16)), validate=Length(min=1, max=10))
    birth_date = Date(allow_none=True)
    guardian = Nested(SubjectRefSchema, allow_none=True)


class IdentifierKindSchema(Schema):
    kind = String(required=True)
    system = String(required=True)


class SubjectSchema(Schema):
    subject_id = String(required=True)
    jurisdictions = List(String(), required=True)
    identifiers = List(Nested(IdentifierKindSchema), required=True, metadata={"description": "kinds only, no values"})
    has_birth_date = Boolean(required=True)
    guardian = String(allow_none=True)
    restricted = Boolean(required=True, metadata={"description": "processing restricted (GDPR Art 18)"})
    legal_hold = Boolean(required=True)


def subject_document(subject: Subject) -> dict[str, Any]:
    session = get_session()
    guardian = session.get(Subject, subject.guardian_pk) if subject.guardian_pk else None
    return {
        "subject_id": subject.subject_id,
        "jurisdictions": service.jurisdictions_of(subject),
        "identifiers": service.identifier_kinds(session, subject),
        "has_birth_date": subject.birth_date_enc is not None,
        "guardian": guardian.subject_id if guardian else None,
        "restricted": subject.restricted,
        "legal_hold": subject.legal_hold,
    }


def _known_jurisdictions() -> list[str]:
    return list(taxonomy_cache().current(get_session()).jurisdictions)


@bp.post("/subjects")
@bp.input(SubjectCreateSchema, arg_name="body")
@bp.output(SubjectSchema, status_code=201)
@bp.doc(summary="Register a data subject with identifiers from any system", security=SECURITY, responses=[201, *ERRORS])
@requires("subjects", "write")
@idempotent()
def create_subject(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    session = get_session()
    guardian = service.resolve(session, field_keys(), body["guardian"]) if body["guardian"] else None
    subject = service.create_subject(
        session,
        field_keys(),
        identifiers=[service.IdentifierInput(**i) for i in body["identifiers"]],
        jurisdictions=body["jurisdictions"],
        known_jurisdictions=_known_jurisdictions(),
        birth_date=body["birth_date"],
        guardian=guardian,
    )
    record(
        session,
        "subject.created",
        subject_ref=subject.subject_id,
        details={"identifier_kinds": sorted({i["kind"] for i in body["identifiers"]})},
    )
    return subject_document(subject), 201, {"Location": url_for("subjects.get_subject", subject_id=subject.subject_id)}


@bp.post("/subjects:lookup")
@bp.input(SubjectLookupSchema, arg_name="body")
@bp.output(SubjectSchema)
@bp.doc(summary="Find a subject by any identifier (kept out of the URL)", security=SECURITY, responses=[200, *ERRORS])
@requires("subjects", "read")
def lookup_subject(body: dict[str, Any]) -> dict[str, Any]:
    return subject_document(service.resolve(get_session(), field_keys(), body))


@bp.get("/subjects/<string:subject_id>")
@bp.output(SubjectSchema)
@bp.doc(summary="One subject", security=SECURITY, responses=[200, *ERRORS])
@requires("subjects", "read")
def get_subject(subject_id: str) -> dict[str, Any]:
    return subject_document(service.get_subject(get_session(), subject_id))


@bp.post("/subjects/<string:subject_id>/identifiers")
@bp.input(NewIdentifierSchema, arg_name="body")
@bp.output(SubjectSchema)
@bp.doc(summary="Add an identifier to a subject", security=SECURITY, responses=[200, *ERRORS])
@requires("subjects", "write")
def add_identifier(subject_id: str, body: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    subject = service.get_subject(session, subject_id)
    service.add_identifier(session, field_keys(), subject, service.IdentifierInput(**body))
    record(session, "subject.identifier_added", subject_ref=subject.subject_id, details={"kind": body["kind"]})
    return subject_document(subject)


@bp.patch("/subjects/<string:subject_id>")
@bp.input(SubjectPatchSchema, arg_name="body")
@bp.output(SubjectSchema)
@bp.doc(summary="Change jurisdictions, birth date or guardian", security=SECURITY, responses=[200, *ERRORS])
@requires("subjects", "write")
def patch_subject(subject_id: str, body: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    subject = service.get_subject(session, subject_id)
    changes = dict(body)
    if "guardian" in changes:
        changes["guardian"] = (
            service.resolve(session, field_keys(), changes["guardian"]) if changes["guardian"] else None
        )
    service.update_subject(session, field_keys(), subject, changes, _known_jurisdictions())
    record(session, "subject.updated", subject_ref=subject.subject_id, details={"fields": sorted(body)})
    return subject_document(subject)
