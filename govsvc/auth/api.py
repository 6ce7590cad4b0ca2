"""HTTP layer of credentials: who am I, and the API clients (apps) with their keys."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, List, Nested, String
from apiflask.validators import Length
from flask import url_for

from govsvc.auth import service
from govsvc.auth.models import ApiClient
from govsvc.core.access import current_principal, get_policy_engine, requires
from govsvc.core.db import get_session
from govsvc.core.idempotency import idempotent
from govsvc.core.pagination import cursor_int, page
from govsvc.core.schemas import PageQuerySchema, QueryBoolean, StrictSchema

bp = APIBlueprint("auth", __name__, url_prefix="/v1", tag="Credentials")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 409, 413, 415, 422]


class PrincipalSchema(Schema):
    principal_id = String(required=True, metadata={"example": "client:cl_3f2a9c0d1e4b5a69"})
    kind = String(required=True, metadata={"description": "client or admin"})
    role = String(required=True)
    name = String(required=True)
    client_id = String(allow_none=True)


class ClientSchema(Schema):
    client_id = String(required=True)
    name = String(required=True)
    role = String(required=True)
    key_prefix = String(required=True, metadata={"description": "identifies the key; not secret"})
    created_at = AwareDateTime(required=True)
    created_by = String(allow_none=True)
    expires_at = AwareDateTime(allow_none=True)
    revoked_at = AwareDateTime(allow_none=True)
    status = String(required=True, metadata={"description": "active, expired or revoked"})


class ClientItemSchema(ClientSchema):
    """A client as a page lists it (its own OpenAPI component: one class, one component)."""


class CreatedClientSchema(ClientSchema):
    api_key = String(
        allow_none=True,
        metadata={"description": "the key, shown once (null when an Idempotency-Key replay answers)"},
    )


class ClientCreateSchema(StrictSchema):
    name = String(required=True, validate=Length(min=1, max=200))
    role = String(required=True, validate=Length(min=1, max=64))
    expires_at = AwareDateTime(load_default=None, allow_none=True, metadata={"description": "UTC ISO 8601"})


class ClientListQuerySchema(PageQuerySchema):
    include_revoked = QueryBoolean(load_default=True)


class ClientPageSchema(Schema):
    items = List(Nested(ClientItemSchema), required=True)
    next_cursor = String(allow_none=True, required=True)


def client_document(client: ApiClient) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "role": client.role,
        "key_prefix": client.key_prefix,
        "created_at": client.created_at,
        "created_by": client.created_by,
        "expires_at": client.expires_at,
        "revoked_at": client.revoked_at,
        "status": service.client_status(client),
    }


@bp.get("/me")
@bp.output(PrincipalSchema)
@bp.doc(summary="The authenticated caller", security=SECURITY, responses=[200, 401, 403])
@requires("self", "read")
def me() -> dict[str, Any]:
    principal = current_principal()
    return {
        "principal_id": principal.principal_id,
        "kind": principal.kind,
        "role": principal.role,
        "name": principal.name,
        "client_id": principal.client_id,
    }


@bp.post("/clients")
@bp.input(ClientCreateSchema, arg_name="body")
@bp.output(CreatedClientSchema, status_code=201)
@bp.doc(
    summary="Create an API client; its key is in this response only",
    description="Honours `Idempotency-Key`: a replay returns the same client with `api_key: null`.",
    security=SECURITY,
    responses=[201, *ERRORS],
)
@requires("clients", "create")
@idempotent(redact=("api_key",))
def create_client(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    issued = service.create_client(
        get_session(),
        name=body["name"],
        role=body["role"],
        expires_at=body["expires_at"],
        known_roles=get_policy_engine().roles,
        created_by=current_principal().principal_id,
    )
    service.record_client_created(get_session(), issued.client)
    document = client_document(issued.client) | {"api_key": issued.api_key}
    return document, 201, {"Location": url_for("auth.get_client", client_id=issued.client.client_id)}


@bp.get("/clients")
@bp.input(ClientListQuerySchema, location="query", arg_name="query")
@bp.output(ClientPageSchema)
@bp.doc(summary="List API clients (cursor pagination)", security=SECURITY, responses=[200, *ERRORS])
@requires("clients", "read")
def list_clients(query: dict[str, Any]) -> dict[str, Any]:
    rows = service.list_clients(
        get_session(),
        after_pk=cursor_int(query["cursor"]),
        limit=query["limit"],
        include_revoked=query["include_revoked"],
    )
    items, next_cursor = page(rows, query["limit"], lambda client: {"after": client.pk})
    return {"items": [client_document(client) for client in items], "next_cursor": next_cursor}


@bp.get("/clients/<string:client_id>")
@bp.output(ClientSchema)
@bp.doc(summary="One API client", security=SECURITY, responses=[200, *ERRORS])
@requires("clients", "read")
def get_client(client_id: str) -> dict[str, Any]:
    return client_document(service.get_client(get_session(), client_id))


@bp.post("/clients/<string:client_id>:revoke")
@bp.output(ClientSchema)
@bp.doc(summary="Revoke an API client's key, effective immediately", security=SECURITY, responses=[200, *ERRORS])
@requires("clients", "revoke")
def revoke_client(client_id: str) -> dict[str, Any]:
    client = service.revoke_client(get_session(), client_id)
    service.record_client_revoked(get_session(), client)
    return client_document(client)
