"""HTTP layer of external SQL sources (``/v1/sources``): register (the connection URL is stored encrypted and never
shown again), list, read, disable."""

from __future__ import annotations

import json
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Boolean, Dict, String
from apiflask.fields import List as ListField
from apiflask.validators import Length
from flask import current_app
from sqlalchemy import select

from govsvc.audit.service import record
from govsvc.core.access import current_principal, requires
from govsvc.core.db import get_session
from govsvc.core.errors import NotFoundError
from govsvc.core.idempotency import idempotent
from govsvc.core.schemas import StrictSchema
from govsvc.sources.models import ExternalSource
from govsvc.sources.service import Sources

bp = APIBlueprint("sources", __name__, url_prefix="/v1/sources", tag="External SQL sources")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 409, 413, 415, 422]


def sources() -> Sources:
    return current_app.extensions["govsvc.sources"]


class ExternalSourceCreateSchema(StrictSchema):
    name = String(required=True, validate=Length(min=1, max=64))
    url = String(
        required=True,
        validate=Length(min=10, max=1000),
        metadata={"description": "postgresql://... or sqlite:///...; stored encrypted, never returned"},
    )
    table = String(required=True, validate=Length(min=1, max=128))
    key_column = String(required=True, validate=Length(min=1, max=64), metadata={"description": "primary key"})
    subject_column = String(required=True, validate=Length(min=1, max=64))
    subject_kind = String(required=True, metadata={"description": "the identifier kind its values are: crm_id, email"})
    subject_system = String(load_default="", validate=Length(max=64))
    timestamp_column = String(required=True, validate=Length(min=1, max=64))
    columns = Dict(
        keys=String(validate=Length(min=1, max=64)),
        values=String(validate=Length(min=1, max=120)),
        required=True,
        metadata={"description": "column -> data category of the taxonomy"},
    )


class ExternalSourceSchema(Schema):
    source_id = String()
    name = String()
    store = String(metadata={"description": "what retention rules and holds call it: source:<name>"})
    dialect = String()
    table = String()
    key_column = String()
    subject_column = String()
    subject_kind = String()
    subject_system = String()
    timestamp_column = String()
    columns = Dict()
    enabled = Boolean()
    created_at = AwareDateTime()
    created_by = String()


class ExternalSourceListSchema(Schema):
    items = ListField(Dict())


def source_document(row: ExternalSource) -> dict[str, Any]:
    return {
        "source_id": row.source_id,
        "name": row.name,
        "store": f"source:{row.name}",
        "dialect": row.dialect,
        "table": row.table_name,
        "key_column": row.key_column,
        "subject_column": row.subject_column,
        "subject_kind": row.subject_kind,
        "subject_system": row.subject_system,
        "timestamp_column": row.timestamp_column,
        "columns": json.loads(row.columns),
        "enabled": row.enabled,
        "created_at": row.created_at,
        "created_by": row.created_by,
    }


@bp.post("")
@bp.input(ExternalSourceCreateSchema, arg_name="body")
@bp.output(ExternalSourceSchema, status_code=201)
@bp.doc(
    summary="Register an external SQL table (PostgreSQL or SQLite) for retention purges and DSRs",
    description="The table and columns are checked by reflection; the URL (and any password in it) is stored "
    "encrypted under a key derived from the service secret and is never returned.",
    security=SECURITY,
    responses=[201, *ERRORS],
)
@requires("sources", "write")
@idempotent()
def create_source(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    session = get_session()
    row = sources().register(session, body, actor=current_principal().principal_id)
    record(
        session,
        "config.changed",
        object_ref=f"source:{row.name}",
        data_categories=sorted(set(body["columns"].values())),
        details={"dialect": row.dialect, "columns": len(body["columns"])},
    )
    return source_document(row), 201


@bp.get("")
@bp.output(ExternalSourceListSchema)
@bp.doc(summary="Registered sources (never their URLs)", security=SECURITY, responses=[200, *ERRORS])
@requires("sources", "read")
def list_sources() -> dict[str, Any]:
    rows = get_session().scalars(select(ExternalSource).order_by(ExternalSource.pk)).all()
    return {"items": [source_document(r) for r in rows]}


@bp.get("/<string:source_id>")
@bp.output(ExternalSourceSchema)
@bp.doc(summary="One source", security=SECURITY, responses=[200, *ERRORS])
@requires("sources", "read")
def get_source(source_id: str) -> dict[str, Any]:
    row = get_session().scalar(select(ExternalSource).where(ExternalSource.source_id == source_id))
    if row is None:
        raise NotFoundError("No such source.")
    return source_document(row)


@bp.delete("/<string:source_id>")
@bp.output({}, status_code=204)
@bp.doc(summary="Disable a source", security=SECURITY, responses=[204, *ERRORS])
@requires("sources", "write")
def delete_source(source_id: str) -> tuple[str, int]:
    session = get_session()
    row = sources().disable(session, source_id)
    record(session, "config.changed", object_ref=f"source:{row.name}", reason_code="disabled")
    return "", 204
