"""Access reports from the audit log: who touched a person's data, what a principal touched, and anomalies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, select
from sqlalchemy.orm import Session

from govsvc.audit.models import AuditEvent

SUCCESSFUL = ("success", "allow")


def _in_period(time_from: datetime | None, time_to: datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if time_from is not None:
        conditions.append(AuditEvent.time >= time_from)
    if time_to is not None:
        conditions.append(AuditEvent.time < time_to)
    return conditions


def subject_access(
    session: Session, subject_ref: str, time_from: datetime | None = None, time_to: datetime | None = None
) -> list[dict[str, Any]]:
    """Per principal: which actions it performed on this subject's data, how often, first and last time."""
    rows = session.execute(
        select(
            AuditEvent.actor_principal,
            AuditEvent.actor_role,
            AuditEvent.action,
            AuditEvent.outcome,
            func.count(),
            func.min(AuditEvent.time),
            func.max(AuditEvent.time),
        )
        .where(AuditEvent.subject_ref == subject_ref, *_in_period(time_from, time_to))
        .group_by(AuditEvent.actor_principal, AuditEvent.actor_role, AuditEvent.action, AuditEvent.outcome)
        .order_by(AuditEvent.actor_principal, AuditEvent.action)
    ).all()
    return [
        {
            "principal": principal,
            "role": role,
            "action": action,
            "outcome": outcome,
            "count": count,
            "first": first,
            "last": last,
        }
        for principal, role, action, outcome, count, first, last in rows
    ]


def principal_activity(
    session: Session, principal_id: str, time_from: datetime | None = None, time_to: datetime | None = None
) -> dict[str, Any]:
    """What a principal did: counts per action and the distinct (pseudonymous) subjects it touched."""
    period = _in_period(time_from, time_to)
    actions = session.execute(
        select(AuditEvent.action, AuditEvent.outcome, func.count())
        .where(AuditEvent.actor_principal == principal_id, *period)
        .group_by(AuditEvent.action, AuditEvent.outcome)
        .order_by(AuditEvent.action)
    ).all()
    subjects = session.scalar(
        select(func.count(func.distinct(AuditEvent.subject_ref))).where(
            AuditEvent.actor_principal == principal_id, AuditEvent.subject_ref.is_not(None), *period
        )
    )
    return {
        "principal": principal_id,
        "actions": [{"action": a, "outcome": o, "count": c} for a, o, c in actions],
        "distinct_subjects": int(subjects or 0),
    }


@dataclass(frozen=True)
class Anomaly:
    principal: str
    hour: str
    distinct_subjects: int


def _hour_bucket(session: Session) -> ColumnElement[str]:
    if session.get_bind().dialect.name == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), AuditEvent.time)
        return func.to_char(func.date_trunc("hour", utc), literal_column("'YYYY-MM-DD\"T\"HH24'"))
    return func.strftime("%Y-%m-%dT%H", AuditEvent.time)


def anomalies(
    session: Session, threshold: int, time_from: datetime | None = None, time_to: datetime | None = None
) -> list[Anomaly]:
    """Principals that touched more distinct subjects in one hour than ``threshold``."""
    hour = _hour_bucket(session).label("hour")
    distinct = func.count(func.distinct(AuditEvent.subject_ref))
    rows = session.execute(
        select(AuditEvent.actor_principal, hour, distinct)
        .where(
            AuditEvent.subject_ref.is_not(None),
            AuditEvent.actor_principal.is_not(None),
            AuditEvent.outcome.in_(SUCCESSFUL),
            *_in_period(time_from, time_to),
        )
        .group_by(AuditEvent.actor_principal, hour)
        .having(distinct > threshold)
        .order_by(distinct.desc())
    ).all()
    return [Anomaly(principal, bucket, int(count)) for principal, bucket, count in rows]
