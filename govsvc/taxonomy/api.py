"""HTTP layer of the taxonomy: read it, and change purposes or the whole document (validated, versioned, audited)."""

from __future__ import annotations

import copy
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Dict, Integer, List, String
from apiflask.validators import Length
from flask import current_app

from govsvc.core.access import current_principal, requires
from govsvc.core.db import get_session
from govsvc.core.errors import NotFoundError
from govsvc.core.schemas import StrictSchema
from govsvc.taxonomy import service
from govsvc.taxonomy.service import TaxonomyCache

bp = APIBlueprint("taxonomy", __name__, url_prefix="/v1/taxonomy", tag="Taxonomy")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 409, 413, 415, 422]


def taxonomy_cache() -> TaxonomyCache:
    return current_app.extensions["govsvc.taxonomy"]


class TaxonomyDocumentSchema(Schema):
    version = Integer(required=True)
    document = Dict(required=True, metadata={"description": "categories, purposes, channels, jurisdictions"})


class PurposeListSchema(Schema):
    version = Integer(required=True)
    purposes = List(Dict(), required=True)


class CategoryListSchema(Schema):
    version = Integer(required=True)
    categories = List(Dict(), required=True)


class DocumentInSchema(StrictSchema):
    document = Dict(required=True)
    comment = String(load_default=None, validate=Length(max=500))


class PurposeInSchema(StrictSchema):
    purpose = Dict(required=True, metadata={"description": "the purpose definition (its key is in the path)"})
    comment = String(load_default=None, validate=Length(max=500))


class ChangeSchema(Schema):
    version = Integer(required=True, metadata={"description": "the new taxonomy version"})


def _current_document() -> tuple[int, dict[str, Any]]:
    taxonomy = taxonomy_cache().current(get_session())
    return taxonomy.version, copy.deepcopy(dict(taxonomy.document))


def _store(document: dict[str, Any], object_ref: str, comment: str | None) -> dict[str, int]:
    version = service.change_taxonomy(
        get_session(), document, object_ref=object_ref, actor=current_principal().principal_id, comment=comment
    )
    return {"version": version}


@bp.get("")
@bp.output(TaxonomyDocumentSchema)
@bp.doc(summary="The taxonomy in force", security=SECURITY, responses=[200, 401, 403])
@requires("taxonomy", "read")
def get_taxonomy() -> dict[str, Any]:
    version, document = _current_document()
    return {"version": version, "document": document}


@bp.get("/purposes")
@bp.output(PurposeListSchema)
@bp.doc(summary="Purposes of processing", security=SECURITY, responses=[200, 401, 403])
@requires("taxonomy", "read")
def list_purposes() -> dict[str, Any]:
    version, document = _current_document()
    return {"version": version, "purposes": document["purposes"]}


@bp.get("/categories")
@bp.output(CategoryListSchema)
@bp.doc(summary="Data categories with levels and regime flags", security=SECURITY, responses=[200, 401, 403])
@requires("taxonomy", "read")
def list_categories() -> dict[str, Any]:
    version, document = _current_document()
    return {"version": version, "categories": document["categories"]}


@bp.put("")
@bp.input(DocumentInSchema, arg_name="body")
@bp.output(ChangeSchema)
@bp.doc(
    summary="Replace the taxonomy (validated; stored as a new version)", security=SECURITY, responses=[200, *ERRORS]
)
@requires("taxonomy", "write")
def replace_taxonomy(body: dict[str, Any]) -> dict[str, int]:
    return _store(body["document"], "taxonomy", body["comment"])


@bp.put("/purposes/<string:key>")
@bp.input(PurposeInSchema, arg_name="body")
@bp.output(ChangeSchema)
@bp.doc(
    summary="Create or change one purpose",
    description="A changed purpose needs a higher `version`; consents given for an earlier version whose scope "
    "is narrower no longer suffice (reconsent_required).",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("taxonomy", "write")
def put_purpose(key: str, body: dict[str, Any]) -> dict[str, int]:
    version = service.change_purpose(
        get_session(),
        taxonomy_cache().current(get_session()),
        {**body["purpose"], "key": key},
        actor=current_principal().principal_id,
        comment=body["comment"],
    )
    return {"version": version}


@bp.get("/purposes/<string:key>")
@bp.output(Schema.from_dict({"purpose": Dict(required=True), "version": Integer(required=True)})())
@bp.doc(summary="One purpose", security=SECURITY, responses=[200, 401, 403, 404])
@requires("taxonomy", "read")
def get_purpose(key: str) -> dict[str, Any]:
    version, document = _current_document()
    for purpose in document["purposes"]:
        if purpose.get("key") == key:
            return {"version": version, "purpose": purpose}
    known = ", ".join(sorted(p["key"] for p in document["purposes"]))
    raise NotFoundError(f"No purpose {key!r}. Known purposes: {known}.")
