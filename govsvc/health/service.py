"""Liveness and readiness checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from govsvc.audit.signing import active_key
from govsvc.core.db import Database
from govsvc.core.migrate import current_revision, head_revision
from govsvc.policy.service import PolicyEngine


@dataclass
class Readiness:
    """Each check's outcome; ready only when all pass."""

    checks: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(check["ok"] for check in self.checks.values())


def check_readiness(database: Database, engine: PolicyEngine, pii: Any = None) -> Readiness:
    """Database reachable, schema at the newest migration, RBAC policy loaded, an audit signing key present;
    which NLP engine the PII service runs."""
    readiness = Readiness()
    if pii is not None:
        readiness.checks["pii"] = {
            "ok": True,
            "nlp": pii.engines.nlp_name,
            "mode": pii.engines.mode,
            "build_seconds": round(pii.engines.build_seconds, 2),
        }
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            readiness.checks["database"] = {"ok": True, "backend": database.engine.dialect.name}
            current, head = current_revision(connection), head_revision()
            readiness.checks["migrations"] = {"ok": current == head, "current": current, "head": head}
            with database.new_session() as session:
                if current == head:
                    engine.ensure_current(session)
            readiness.checks["policy"] = {
                "ok": engine.loaded,
                "version": engine.version,
                "roles": len(engine.roles),
            }
            if current == head:
                with database.new_session() as session:
                    readiness.checks["audit_signing_key"] = {"ok": active_key(session) is not None}
    except SQLAlchemyError as error:
        readiness.checks["database"] = {"ok": False, "error": type(error).__name__}
        readiness.checks.setdefault("migrations", {"ok": False, "error": "database unreachable"})
        readiness.checks.setdefault("policy", {"ok": False, "error": "database unreachable"})
    return readiness
