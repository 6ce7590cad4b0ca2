"""HTTP layer of legal holds (``/v1/holds``): place, list, read and release holds. Releasing a subject's hold
re-runs the DSR erasures it kept back."""

from __future__ import annotations

import json
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Date, List, Nested, String
from apiflask.validators import Length, OneOf
from flask import current_app
from sqlalchemy import select

from govsvc.core.access import current_principal, requires
from govsvc.core.db import get_db, get_session
from govsvc.core.idempotency import idempotent
from govsvc.core.pagination import cursor_int, page
from govsvc.core.schemas import PageQuerySchema, StrictSchema
from govsvc.holds import service
from govsvc.holds.models import LegalHold
from govsvc.subjects import service as subjects
from govsvc.subjects.api import SubjectRefSchema, field_keys
from govsvc.subjects.models import Subject
from govsvc.taxonomy.api import taxonomy_cache

bp = APIBlueprint("holds", __name__, url_prefix="/v1/holds", tag="Legal holds")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 409, 413, 415, 422]


class LegalHoldCreateSchema(StrictSchema):
    scope = String(required=True, validate=OneOf(service.SCOPES))
    subject = Nested(SubjectRefSchema, load_default=None, allow_none=True)
    categories = List(String(validate=Length(min=1, max=120)), load_default=list, validate=Length(max=50))
    dataset = String(
        load_default=None,
        validate=Length(max=120),
        metadata={"description": "vault, consent, dsr_exports, api_keys or source:<name>"},
    )
    basis = String(
        required=True,
        validate=Length(min=3, max=500),
        metadata={"description": "the case or the regulator's request (a reference, no personal data)"},
    )
    owner = String(required=True, validate=Length(min=1, max=120))
    review_at = Date(required=True)


class LegalHoldSchema(Schema):
    hold_id = String()
    scope = String()
    subject_id = String(allow_none=True)
    categories = List(String())
    dataset = String(allow_none=True)
    basis = String()
    owner = String()
    review_at = Date()
    status = String(metadata={"description": "active | released"})
    created_at = AwareDateTime()
    created_by = String()
    released_at = AwareDateTime(allow_none=True)
    released_by = String(allow_none=True)
    erasures_rerun = List(String(), metadata={"description": "DSR erasures re-run after the release"})


class LegalHoldListSchema(Schema):
    items = List(Nested(LegalHoldSchema))
    next_cursor = String(allow_none=True)


class LegalHoldQuerySchema(PageQuerySchema):
    status = String(load_default=None, validate=OneOf(["active", "released"]))


def hold_document(hold: LegalHold, subject_id: str | None = None, rerun: list[str] | None = None) -> dict[str, Any]:
    if subject_id is None and hold.subject_pk is not None:
        subject_id = get_session().scalar(select(Subject.subject_id).where(Subject.pk == hold.subject_pk))
    return {
        "hold_id": hold.hold_id,
        "scope": hold.scope,
        "subject_id": subject_id,
        "categories": json.loads(hold.categories),
        "dataset": hold.dataset,
        "basis": hold.basis,
        "owner": hold.owner,
        "review_at": hold.review_at,
        "status": hold.status,
        "created_at": hold.created_at,
        "created_by": hold.created_by,
        "released_at": hold.released_at,
        "released_by": hold.released_by,
        "erasures_rerun": rerun or [],
    }


@bp.post("")
@bp.input(LegalHoldCreateSchema, arg_name="body")
@bp.output(LegalHoldSchema, status_code=201)
@bp.doc(
    summary="Place a legal hold over a subject (all or some categories), a category or a dataset",
    description="Held data is never purged or erased and is restricted: the subject's `legal_hold` flag is set, "
    "so decisions deny everything but reads by legal.",
    security=SECURITY,
    responses=[201, *ERRORS],
)
@requires("holds", "write")
@idempotent()
def create_hold(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    session = get_session()
    subject = subjects.resolve(session, field_keys(), body["subject"]) if body["subject"] else None
    hold = service.create_hold(
        session,
        service.HoldInput(
            scope=body["scope"],
            basis=body["basis"],
            owner=body["owner"],
            review_at=body["review_at"],
            subject=subject,
            categories=tuple(body["categories"]),
            dataset=body["dataset"],
            known_categories=frozenset(taxonomy_cache().current(session).categories),
        ),
        actor=current_principal().principal_id,
    )
    return hold_document(hold, subject.subject_id if subject else None), 201


@bp.get("")
@bp.input(LegalHoldQuerySchema, location="query", arg_name="query")
@bp.output(LegalHoldListSchema)
@bp.doc(summary="Legal holds, newest first", security=SECURITY, responses=[200, *ERRORS])
@requires("holds", "read")
def list_holds(query: dict[str, Any]) -> dict[str, Any]:
    statement = select(LegalHold).order_by(LegalHold.pk.desc()).limit(query["limit"] + 1)
    before = cursor_int(query.get("cursor"))
    if before is not None:
        statement = statement.where(LegalHold.pk < before)
    if query["status"]:
        statement = statement.where(LegalHold.status == query["status"])
    rows, next_cursor = page(get_session().scalars(statement).all(), query["limit"], lambda h: {"after": h.pk})
    return {"items": [hold_document(h) for h in rows], "next_cursor": next_cursor}


@bp.get("/<string:hold_id>")
@bp.output(LegalHoldSchema)
@bp.doc(summary="One legal hold", security=SECURITY, responses=[200, *ERRORS])
@requires("holds", "read")
def get_hold(hold_id: str) -> dict[str, Any]:
    return hold_document(service.get_hold(get_session(), hold_id))


@bp.post("/<string:hold_id>:release")
@bp.output(LegalHoldSchema)
@bp.doc(
    summary="Release a hold: pending retention rules apply again, and DSR erasures it kept back are re-run",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("holds", "release")
def release_hold(hold_id: str) -> dict[str, Any]:
    from govsvc.dsr.domain import rerun_held_erasures

    session = get_session()
    hold = service.release_hold(session, hold_id, actor=current_principal().principal_id)
    subject_id = (
        session.scalar(select(Subject.subject_id).where(Subject.pk == hold.subject_pk)) if hold.subject_pk else None
    )
    session.commit()  # the release stands before the erasures it frees run (each commits on its own)
    rerun = []
    if subject_id is not None:
        rerun = rerun_held_erasures(
            get_db(), current_app.extensions["govsvc.dsr"], subject_id, actor=current_principal().principal_id
        )
    return hold_document(service.get_hold(get_session(), hold_id), subject_id, rerun)
