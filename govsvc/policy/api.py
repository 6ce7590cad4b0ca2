"""HTTP layer of the service's own RBAC policy: read it, and reload it on every instance."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Integer, List, String

from govsvc.audit.service import record
from govsvc.core.access import current_principal, get_policy_engine, requires
from govsvc.core.db import get_session
from govsvc.policy import service

bp = APIBlueprint("policy", __name__, url_prefix="/v1", tag="Policy")
SECURITY = "BearerAuth"


class PolicyDocumentSchema(Schema):
    version = Integer(required=True)
    digest = String(required=True, metadata={"description": "SHA-256 of the sorted policy lines"})
    roles = List(String(), required=True)
    lines = List(List(String()), required=True, metadata={"description": "casbin lines: [ptype, v0, v1, ...]"})
    model = String(required=True, metadata={"description": "the casbin model (policies/model.conf)"})


class ReloadSchema(Schema):
    version = Integer(required=True, metadata={"description": "the new policy version every instance will load"})


@bp.get("/policy")
@bp.output(PolicyDocumentSchema)
@bp.doc(summary="The RBAC policy in force", security=SECURITY, responses=[200, 401, 403])
@requires("policy", "read")
def get_policy() -> dict[str, Any]:
    session = get_session()
    engine = get_policy_engine()
    version = engine.ensure_current(session)
    lines = service.current_lines(session)
    return {
        "version": version,
        "digest": service.policy_digest(lines),
        "roles": sorted(engine.roles),
        "lines": [line.as_row() for line in lines],
        "model": engine.model_text,
    }


@bp.post("/policy:reload")
@bp.output(ReloadSchema)
@bp.doc(
    summary="Reload the stored policy on every instance",
    description="Bumps the policy version; each instance reloads before its next request.",
    security=SECURITY,
    responses=[200, 401, 403],
)
@requires("policy", "reload")
def reload_policy() -> dict[str, int]:
    version = service.bump_version(get_session(), actor=current_principal().principal_id)
    record(
        get_session(), "config.changed", object_ref="policy:rbac", reason_code="reload", details={"version": version}
    )
    return {"version": version}
