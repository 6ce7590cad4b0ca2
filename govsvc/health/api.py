"""``/healthz`` (the process is alive) and ``/readyz`` (it can serve: database, migrations, policy)."""

from __future__ import annotations

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Dict, String
from flask import current_app

from govsvc.core.access import get_policy_engine, public
from govsvc.core.db import get_db
from govsvc.health.service import check_readiness

bp = APIBlueprint("health", __name__, tag="Health")


class HealthSchema(Schema):
    status = String(required=True, metadata={"example": "ok"})


class ReadinessSchema(Schema):
    status = String(required=True, metadata={"description": "ready or not_ready"})
    ready = Boolean(required=True)
    checks = Dict(keys=String(), values=Dict(), required=True)


@bp.get("/healthz")
@bp.output(HealthSchema)
@bp.doc(summary="Liveness: the process answers")
@public
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
@bp.output(ReadinessSchema)
@bp.doc(
    summary="Readiness: database reachable, migrations at head, policies loaded, PII engines built",
    responses=[200, 503],
)
@public
def readyz() -> tuple[dict[str, object], int]:
    readiness = check_readiness(get_db(), get_policy_engine(), current_app.extensions.get("govsvc.pii"))
    body = {"status": "ready" if readiness.ready else "not_ready", "ready": readiness.ready, "checks": readiness.checks}
    return body, 200 if readiness.ready else 503
