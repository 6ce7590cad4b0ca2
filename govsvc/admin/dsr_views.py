"""What the data-subject request pages show, built from ``govsvc.dsr`` (no Flask here, no logic in templates): the
queue's rows with their SLA countdown, a request's facts, timeline and the actions its status allows, and the
dashboard's "requests" panel.

The workflow itself (verification, assignment, extension, fulfilment, denial) is ``DsrService`` and
``Fulfilment``: the pages call them and show their answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask_babel import lazy_gettext, ngettext
from sqlalchemy.orm import Session

from govsvc.admin.registry import NavItem, Panel, PanelContext, registry
from govsvc.dsr.domain import Dsr
from govsvc.dsr.models import DsrRequest
from govsvc.dsr.service import DENIAL_REASONS, OPEN, TERMINAL, TRANSITIONS, VERIFICATION_METHODS

SOON_DAYS = 3  # an open request due within this many days is flagged "due soon"
PANEL_DEADLINES = 5

REQUEST_TYPE_LABELS = {
    "access": lazy_gettext("Access"),
    "portability": lazy_gettext("Portability"),
    "rectification": lazy_gettext("Rectification"),
    "erasure": lazy_gettext("Erasure"),
    "restriction": lazy_gettext("Restriction"),
    "objection": lazy_gettext("Objection"),
    "withdraw_consent": lazy_gettext("Consent withdrawal"),
    "opt_out_sale_share": lazy_gettext("Opt-out of sale/sharing"),
    "limit_spi": lazy_gettext("Limit sensitive data"),
    "account_cancellation": lazy_gettext("Account cancellation"),
}
EVENT_LABELS = {
    "received": lazy_gettext("Request received"),
    "status": lazy_gettext("Status changed"),
    "verification_failed": lazy_gettext("Verification failed"),
    "paused": lazy_gettext("Clock paused"),
    "resumed": lazy_gettext("Clock resumed"),
    "extension": lazy_gettext("Deadline extended"),
    "acknowledged": lazy_gettext("Acknowledged"),
    "assigned": lazy_gettext("Assigned"),
    "note": lazy_gettext("Note"),
    "overdue": lazy_gettext("Overdue"),
}
DENIAL_LABELS = {
    "suspected_fraud": lazy_gettext("Suspected fraud"),
    "insuf_verification": lazy_gettext("Identity not verified"),
    "no_match": lazy_gettext("No matching data subject"),
    "claim_not_covered": lazy_gettext("Not covered by the law"),
    "outside_jurisdiction": lazy_gettext("Outside the jurisdiction"),
    "too_many_requests": lazy_gettext("Manifestly excessive or repeated"),
    "legal_exemption": lazy_gettext("Legal exemption"),
    "other": lazy_gettext("Other"),
}
REQUESTER_LABELS = {
    "subject": lazy_gettext("the data subject"),
    "authorized_agent": lazy_gettext("an authorised agent"),
    "guardian": lazy_gettext("a guardian"),
    "close_relative": lazy_gettext("a close relative of a deceased person"),
}
METHOD_LABELS = {
    "data_points": lazy_gettext("Matching data points"),
    "account_reauth": lazy_gettext("Account re-authentication"),
    "document_check": lazy_gettext("Document check"),
}
LEVEL_LABELS = {
    "none": lazy_gettext("none (not allowed by law)"),
    "reasonable": lazy_gettext("reasonable (2 data points)"),
    "high": lazy_gettext("high (3 data points and a signed declaration)"),
}
assert set(DENIAL_LABELS) == set(DENIAL_REASONS) and set(METHOD_LABELS) == set(VERIFICATION_METHODS)


@dataclass(frozen=True)
class Countdown:
    """The SLA countdown of one request: ``state`` is closed, paused, overdue, today, soon or ok."""

    state: str
    days: int
    label: str
    due_at: datetime


def countdown(dsr: Dsr, request: DsrRequest, now: datetime) -> Countdown:
    """Days left to the due date (``DsrService.sla``), or days overdue, in words."""
    sla = dsr.service.sla(request, now)
    days = int(sla["days_remaining"])
    if request.status in TERMINAL:
        return Countdown("closed", 0, str(lazy_gettext("closed")), request.due_at)
    if sla["overdue"]:
        late = max(1, -days)
        label = ngettext("overdue by %(num)d day", "overdue by %(num)d days", late)
        return Countdown("paused" if request.paused else "overdue", -late, label, request.due_at)
    if request.paused:
        return Countdown(
            "paused", days, ngettext("%(num)d day left (paused)", "%(num)d days left (paused)", days), request.due_at
        )
    if days == 0:
        return Countdown("today", 0, str(lazy_gettext("due within a day")), request.due_at)
    state = "soon" if days <= SOON_DAYS else "ok"
    return Countdown(state, days, ngettext("%(num)d day left", "%(num)d days left", days), request.due_at)


def queue_row(session: Session, dsr: Dsr, request: DsrRequest, now: datetime) -> dict[str, Any]:
    subject = dsr.service.subject_of(session, request)
    return {
        "request_id": request.request_id,
        "type": request.request_type,
        "type_label": REQUEST_TYPE_LABELS.get(request.request_type, request.request_type),
        "status": request.status,
        "subject_id": subject.subject_id if subject else None,
        "regimes": dsr.service.regimes(request),
        "received_at": request.received_at,
        "countdown": countdown(dsr, request, now),
        "assignee": request.assignee,
        "paused": request.paused,
    }


def available_actions(dsr: Dsr, request: DsrRequest, now: datetime, allowed: Callable[[str, str], bool]) -> set[str]:
    """The actions the request's status allows and the viewer's role may take (the routes check both again: the
    role with ``@requires``, the status in the service)."""
    possible = set()
    is_open = request.status in OPEN
    if request.status == "pending_verification" and allowed("dsr", "verify"):
        possible.add("verify")
    if allowed("dsr", "manage"):
        if is_open:
            possible.update({"assign", "note"})
        if (
            is_open
            and request.extended_at is None
            and now <= request.due_at
            and request.max_extended_due_at > request.due_at
        ):
            possible.add("extend")
        if "denied" in TRANSITIONS.get(request.status, frozenset()):
            possible.add("deny")
        if request.acknowledged_at is None and is_open:
            possible.add("acknowledge")
        if request.paused:
            possible.add("resume")
        elif request.status in PAUSABLE:
            possible.add("pause")
    if "cancelled" in TRANSITIONS.get(request.status, frozenset()) and allowed("dsr", "cancel"):
        possible.add("cancel")
    if request.status in ("verified", "in_progress", "extended") and allowed("dsr", "fulfil"):
        possible.add("complete")
    return possible


PAUSABLE = frozenset({"pending_verification", "verified", "in_progress", "extended"})
PAUSE_LABELS = {
    "awaiting_identity": lazy_gettext("Waiting for proof of identity"),
    "awaiting_clarification": lazy_gettext("Waiting for the requester to clarify"),
}


LETTER_LABELS = {
    "acknowledgement": lazy_gettext("Acknowledgement"),
    "extension": lazy_gettext("Extension notice"),
    "completed": lazy_gettext("Completion letter"),
    "partially_completed": lazy_gettext("Partial completion letter"),
    "denied": lazy_gettext("Refusal letter"),
    "cancelled": lazy_gettext("Cancellation letter"),
}


def letters_for(request: DsrRequest) -> list[tuple[str, Any]]:
    """The response letters this request has now (``govsvc.dsr.letters``): the acknowledgement, the extension
    notice once extended, and the closing letter of its final status."""
    kinds = ["acknowledgement"]
    if request.extended_at is not None:
        kinds.append("extension")
    if request.status in ("completed", "partially_completed", "denied", "cancelled"):
        kinds.append(request.status)
    return [(kind, LETTER_LABELS[kind]) for kind in kinds]


def _details(raw: str | None) -> dict[str, Any]:
    return json.loads(raw) if raw else {}


def request_view(
    session: Session, dsr: Dsr, request: DsrRequest, now: datetime, allowed: Callable[[str, str], bool]
) -> dict[str, Any]:
    """Everything the detail page shows of a request: facts, deadlines, verification, runs and the timeline."""
    row = queue_row(session, dsr, request, now)
    outcome = _details(request.outcome)
    return {
        **row,
        "request": request,
        "governing_regime": request.governing_regime,
        "schedule": json.loads(request.schedule),
        "requester": REQUESTER_LABELS.get(request.requester_kind, request.requester_kind),
        "channel": request.channel,
        "source": request.source,
        "language": request.language,
        "parameters": {k: v for k, v in dsr.service.parameters(request).items() if k != "status_callback_urls"},
        "verification_level": LEVEL_LABELS.get(request.verification_level, request.verification_level),
        "verification_method": METHOD_LABELS.get(request.verification_method or "", request.verification_method),
        "extended": request.extended_at is not None,
        "denial_label": DENIAL_LABELS.get(request.denial_reason or "", request.denial_reason),
        "runs": [
            {
                "connector": run.connector,
                "operation": run.operation,
                "status": run.status,
                "attempts": run.attempts,
                "records": run.records,
                "finished_at": run.finished_at,
            }
            for run in dsr.service.runs(session, request)
        ],
        "kept": outcome.get("kept", []),
        "timeline": [
            {
                "at": event.at,
                "kind": event.kind,
                "label": EVENT_LABELS.get(event.kind, event.kind),
                "from_status": event.from_status,
                "to_status": event.to_status,
                "actor": event.actor,
                "text": event.text,
                "details": _details(event.details),
            }
            for event in reversed(dsr.service.events(session, request))
        ],
        "actions": available_actions(dsr, request, now, allowed),
        "letters": letters_for(request),
    }


def requests_panel(context: PanelContext) -> Mapping[str, Any]:
    """The dashboard's "requests" panel: open requests, how many are overdue, and the nearest deadlines."""
    dsr: Dsr = context.extensions["govsvc.dsr"]
    summary = dsr.service.queue_summary(context.session, now=context.now, upcoming=PANEL_DEADLINES)
    return {
        "open": summary.open,
        "overdue": summary.overdue,
        "next_due": [queue_row(context.session, dsr, request, context.now) for request in summary.next_due],
    }


registry.add_nav(NavItem("admin.dsr_queue", lazy_gettext("Requests"), ("dsr", "read"), 25, "dsr"))
registry.add_panel(
    Panel(
        "dsr",
        lazy_gettext("Data-subject requests"),
        ("dsr", "read"),
        "admin/panels/dsr.html",
        requests_panel,
        10,
        "requests",
    )
)
