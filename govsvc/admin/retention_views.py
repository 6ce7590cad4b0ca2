"""What the retention and legal hold pages show, built from ``govsvc.retention`` and ``govsvc.holds`` (no Flask
here, no logic in templates): the rules with their schedule and pause state, run reports and the actions a run
allows, the run history, the holds with their overdue reviews, and the dashboard's "retention" panel.

Dry runs, approvals, executions, scheduled passes and holds are the services' (``Retention``, ``scheduled_run``,
``govsvc.holds.service``): the pages call them and show their answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from flask_babel import lazy_gettext
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from govsvc.admin.registry import NavItem, Panel, PanelContext, registry
from govsvc.holds.models import LegalHold
from govsvc.retention.models import RetentionRun
from govsvc.retention.rules import RetentionPolicy, Rule
from govsvc.subjects.models import Subject

HISTORY_SIZE = 50
HOLDS_PAGE = 50
PANEL_RUNS = 5

TRIGGER_LABELS = {
    "created_at": lazy_gettext("after creation"),
    "last_activity": lazy_gettext("after the last activity"),
    "consent_withdrawn": lazy_gettext("after consent was withdrawn"),
    "contract_end": lazy_gettext("after the contract ended"),
    "purpose_completed": lazy_gettext("after the purpose was completed"),
    "dsr_closed": lazy_gettext("after the request was closed"),
}
ACTION_LABELS = {
    "delete": lazy_gettext("delete"),
    "anonymize": lazy_gettext("anonymise"),
    "crypto_shred": lazy_gettext("crypto-shred"),
    "restrict": lazy_gettext("restrict"),
}
MODE_LABELS = {"dry_run": lazy_gettext("dry run"), "execute": lazy_gettext("execution")}
EXCLUSION_LABELS = {
    "legal_hold": lazy_gettext("under a legal hold"),
    "open_dsr": lazy_gettext("an open data-subject request"),
    "open_contract": lazy_gettext("an open contract"),
}
SCOPE_LABELS = {
    "subject": lazy_gettext("a subject"),
    "category": lazy_gettext("data categories"),
    "dataset": lazy_gettext("a dataset"),
}


def rule_row(rule: Rule, job: Mapping[str, Any] | None, approved_dry_run: str | None) -> dict[str, Any]:
    """One rule as the rules table shows it, with its job (schedule, paused, next run) and an approved dry run
    waiting to be executed."""
    return {
        **rule.as_dict(),
        "trigger_label": TRIGGER_LABELS.get(rule.trigger, rule.trigger),
        "action_label": ACTION_LABELS.get(rule.action, rule.action),
        "paused": bool(job and job.get("paused")),
        "next_run_at": datetime.fromisoformat(job["next_run_at"]) if job and job.get("next_run_at") else None,
        "approved_dry_run": approved_dry_run,
    }


def used_dry_runs(session: Session) -> set[str]:
    """Dry runs an execution followed already (each is used once)."""
    return set(session.scalars(select(RetentionRun.dry_run_id).where(RetentionRun.dry_run_id.is_not(None))))


def approved_dry_runs(session: Session, policy: RetentionPolicy) -> dict[str, str]:
    """Per rule, its newest approved, unused, completed dry run of the policy in force (the service still checks
    that it is recent enough when it is executed)."""
    used = used_dry_runs(session)
    found: dict[str, str] = {}
    for run in session.scalars(
        select(RetentionRun)
        .where(
            RetentionRun.mode == "dry_run",
            RetentionRun.status == "completed",
            RetentionRun.approved_at.is_not(None),
            RetentionRun.policy_version == policy.version,
        )
        .order_by(RetentionRun.pk.desc())
    ):
        if run.run_id not in used:
            found.setdefault(run.rule_key, run.run_id)
    return found


def history(
    session: Session, *, after: int | None = None, limit: int = HISTORY_SIZE
) -> tuple[list[RetentionRun], int | None]:
    """One page of runs, newest first, older than the run ``after`` (a row key); and the key to pass as ``after``
    for the next page (None on the last)."""
    statement = select(RetentionRun).order_by(RetentionRun.pk.desc()).limit(limit + 1)
    if after is not None:
        statement = statement.where(RetentionRun.pk < after)
    runs = list(session.scalars(statement))
    return runs[:limit], runs[limit - 1].pk if len(runs) > limit else None


def run_row(document: Mapping[str, Any]) -> dict[str, Any]:
    """A run report (``run_document``) with its labels: counts, exclusions with their reasons, errors."""
    counts = document.get("counts") or {}
    return {
        **document,
        "mode_label": MODE_LABELS.get(document["mode"], document["mode"]),
        "rows": counts.get("rows", 0),
        "subjects": counts.get("subjects", 0),
        "restricted": counts.get("restricted", 0),
        "by_category": sorted((counts.get("by_category") or {}).items()),
        "exclusion_rows": [
            (reason, EXCLUSION_LABELS.get(reason, reason), n) for reason, n in sorted(document["exclusions"].items())
        ],
    }


def run_actions(
    document: Mapping[str, Any], policy: RetentionPolicy, used: set[str], allowed: Callable[[str, str], bool]
) -> set[str]:
    """What a run allows now and the viewer may do: approve a completed dry run, execute an approved one of the
    policy in force (the routes check the role again, the service the approval, its age and its single use)."""
    possible: set[str] = set()
    if document["mode"] != "dry_run" or document["status"] != "completed":
        return possible
    if document["approved_at"] is None and allowed("retention", "approve"):
        possible.add("approve")
    if (
        document["approved_at"] is not None
        and document["run_id"] not in used
        and document["policy_version"] == policy.version
        and allowed("retention", "execute")
    ):
        possible.add("execute")
    return possible


def hold_rows(
    session: Session, *, status: str | None, today: date, after: int | None = None, limit: int = HOLDS_PAGE
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of legal holds (``active``, ``released`` or all), newest first, older than the hold ``after`` (a
    row key), with an overdue review flagged; and the key of the next page (None on the last)."""
    statement = (
        select(LegalHold, Subject.subject_id)
        .outerjoin(Subject, Subject.pk == LegalHold.subject_pk)
        .order_by(LegalHold.pk.desc())
        .limit(limit + 1)
    )
    if status:
        statement = statement.where(LegalHold.status == status)
    if after is not None:
        statement = statement.where(LegalHold.pk < after)
    found = session.execute(statement).all()
    next_after = found[limit - 1][0].pk if len(found) > limit else None
    return [
        {
            "hold_id": hold.hold_id,
            "scope": hold.scope,
            "scope_label": SCOPE_LABELS.get(hold.scope, hold.scope),
            "subject_id": subject_id,
            "categories": json.loads(hold.categories),
            "dataset": hold.dataset,
            "basis": hold.basis,
            "owner": hold.owner,
            "review_at": hold.review_at,
            "review_overdue": hold.status == "active" and hold.review_at < today,
            "status": hold.status,
            "created_at": hold.created_at,
            "created_by": hold.created_by,
            "released_at": hold.released_at,
            "released_by": hold.released_by,
        }
        for hold, subject_id in found[:limit]
    ], next_after


def hold_counts(session: Session, today: date) -> dict[str, int]:
    """Active holds, and how many of them are past their review date."""
    active = LegalHold.status == "active"
    return {
        "active": session.scalar(select(func.count()).select_from(LegalHold).where(active)) or 0,
        "review_overdue": session.scalar(
            select(func.count()).select_from(LegalHold).where(active, LegalHold.review_at < today)
        )
        or 0,
    }


def retention_panel(context: PanelContext) -> Mapping[str, Any]:
    """The dashboard's "retention" panel: the last executions (rule, when, rows purged, errors) and, for roles that
    read holds, the active holds and those past their review date."""
    runs = context.session.scalars(
        select(RetentionRun).where(RetentionRun.mode == "execute").order_by(RetentionRun.pk.desc()).limit(PANEL_RUNS)
    )
    last_runs = [
        {
            "run_id": run.run_id,
            "rule": run.rule_key,
            "at": run.finished_at or run.started_at,
            "status": run.status,
            "rows": json.loads(run.counts or "{}").get("rows", 0),
            "errors": len(json.loads(run.errors or "[]")),
        }
        for run in runs
    ]
    holds = hold_counts(context.session, context.now.date()) if context.allowed("holds", "read") else None
    return {"runs": last_runs, "holds": holds}


registry.add_nav(NavItem("admin.retention", lazy_gettext("Retention"), ("retention", "read"), 30, "retention"))
registry.add_nav(NavItem("admin.holds_list", lazy_gettext("Legal holds"), ("holds", "read"), 31, "hold"))
registry.add_panel(
    Panel(
        "retention",
        lazy_gettext("Retention and legal holds"),
        ("retention", "read"),
        "admin/panels/retention.html",
        retention_panel,
        10,
        "retention",
    )
)
