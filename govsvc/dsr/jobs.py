"""The DSR maintenance job (APScheduler, ``govsvc dsr check-overdue`` and friends): overdue detection, expired
export bundles, OpenDSR callbacks. Safe on several instances at once."""

from __future__ import annotations

from typing import Any

from govsvc.audit.service import AuditContext, reset_context, set_context
from govsvc.core.db import Database
from govsvc.dsr import export
from govsvc.dsr.domain import Dsr
from govsvc.dsr.service import check_overdue

JOB_CONTEXT = AuditContext(principal_id="job:dsr", role="system")


def maintenance(database: Database, dsr: Dsr) -> dict[str, Any]:
    token = set_context(JOB_CONTEXT)
    try:
        overdue = check_overdue(database, dsr.service)
        purged = export.purge_expired(database)
        callbacks = dsr.deliver_callbacks(database)
    finally:
        reset_context(token)
    return {
        "overdue": overdue.overdue,
        "ack_overdue": overdue.ack_overdue,
        "expired": overdue.expired,
        "exports_purged": purged,
        **{f"callbacks_{k}": v for k, v in callbacks.items()},
    }
