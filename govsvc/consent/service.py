"""The consent ledger: append-only events, and a projection that always equals their fold.

Giving and withdrawing use the same call with the same authentication; withdrawing needs no reason. Events that
contradict the ledger (withdrawing what was never given) are refused. Decisions read the projection directly, so
a decision made after the commit, on any instance, sees the change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.consent import requirements
from govsvc.consent.models import ConsentEvent, ConsentState, NoticeUsage, NoticeUsageState
from govsvc.core.db import utcnow
from govsvc.core.errors import ConflictError, NotFoundError, ValidationFailed
from govsvc.crypto.service import FieldKeys
from govsvc.subjects.models import Subject
from govsvc.subjects.service import age_on, birth_date_of, jurisdictions_of
from govsvc.taxonomy.service import Purpose, Taxonomy

EVENT_TYPES = ("given", "refused", "withdrawn", "expired", "renewed")
CONSENT_TYPES = frozenset({"express", "explicit", "separate", "written", "guardian", "opt_out_signal"})
ACTORS = frozenset({"subject", "guardian", "agent", "system"})
# Which statuses an event may follow (None: nothing recorded yet), and the status it leaves.
_ALLOWED_FROM: dict[str, frozenset[str | None]] = {
    "given": frozenset({None, "given", "refused", "withdrawn", "expired"}),
    "renewed": frozenset({"given"}),
    "withdrawn": frozenset({"given"}),
    "expired": frozenset({"given"}),
    "refused": frozenset({None, "given", "refused", "withdrawn", "expired"}),
}
_RESULT = {"given": "given", "renewed": "given", "withdrawn": "withdrawn", "expired": "expired", "refused": "refused"}
MAX_ITEMS = 50


class ContradictionError(ConflictError):
    """The event contradicts the ledger."""


@dataclass(frozen=True)
class StateValue:
    """The projected state of one (subject, purpose, scope)."""

    status: str
    purpose_version: int
    consent_type: str | None
    actor: str
    source: str
    valid_until: datetime | None
    last_event_pk: int


def apply_event(state: StateValue | None, event: ConsentEvent) -> StateValue:
    """The state after ``event``; ContradictionError when the event cannot follow ``state``."""
    current = state.status if state else None
    if current not in _ALLOWED_FROM[event.event_type]:
        what = "nothing was given" if current is None else f"the consent is {current}"
        raise ContradictionError(
            f"Cannot record {event.event_type!r} for {event.purpose_key}{' ' + event.scope if event.scope else ''}: "
            f"{what}.",
            reason="contradicts_ledger",
        )
    keeps_terms = event.event_type in ("withdrawn", "expired") and state is not None
    return StateValue(
        status=_RESULT[event.event_type],
        purpose_version=state.purpose_version if keeps_terms and state else event.purpose_version,
        consent_type=state.consent_type if keeps_terms and state else event.consent_type,
        actor=event.actor,
        source=event.source,
        valid_until=None if event.event_type in ("withdrawn", "refused", "expired") else event.valid_until,
        last_event_pk=event.pk,
    )


def fold(events: Iterable[ConsentEvent]) -> dict[tuple[int, str, str], StateValue]:
    """The projection computed from scratch: what ``consent_state`` must always equal."""
    states: dict[tuple[int, str, str], StateValue] = {}
    for event in events:
        key = (event.subject_pk, event.purpose_key, event.scope)
        states[key] = apply_event(states.get(key), event)
    return states


@dataclass
class ConsentItem:
    purpose: str
    scope: str = ""
    purpose_version: int | None = None


@dataclass
class ConsentAct:
    """One act of the subject (or their guardian/agent): one event type over one or more items."""

    event_type: str
    items: list[ConsentItem]
    channel: str
    actor: str = "subject"
    consent_type: str | None = None
    notice_id: str | None = None
    notice_version: str | None = None
    notice_sha256: str | None = None
    language: str | None = None
    actor_ref: str | None = None
    evidence_ref: str | None = None
    valid_until: datetime | None = None
    source: str = "api"


def _fail(errors: list[dict[str, str]], message: str = "The consent cannot be recorded.", **extensions: str) -> None:
    if errors:
        raise ValidationFailed(message, errors=errors, **extensions)


def _purpose_for(taxonomy: Taxonomy, item: ConsentItem, index: int, errors: list[dict[str, str]]) -> Purpose | None:
    purpose = taxonomy.purposes.get(item.purpose)
    if purpose is None:
        errors.append(
            {
                "field": f"items[{index}].purpose",
                "message": f"unknown purpose; known: {', '.join(sorted(taxonomy.purposes))}",
            }
        )
        return None
    if item.purpose_version is not None and item.purpose_version != purpose.version:
        errors.append(
            {
                "field": f"items[{index}].purpose_version",
                "message": f"consent is recorded for the current version {purpose.version}",
            }
        )
    if item.scope not in requirements.valid_scopes(purpose):
        errors.append(
            {
                "field": f"items[{index}].scope",
                "message": f"known scopes: {', '.join(sorted(requirements.valid_scopes(purpose)))}",
            }
        )
    return purpose


def _check_act(taxonomy: Taxonomy, act: ConsentAct, subject: Subject, age: int | None) -> list[Purpose]:
    errors: list[dict[str, str]] = []
    if act.event_type not in EVENT_TYPES:
        errors.append({"field": "event", "message": f"one of {', '.join(EVENT_TYPES)}"})
    if act.channel not in taxonomy.channels:
        errors.append({"field": "channel", "message": f"known channels: {', '.join(sorted(taxonomy.channels))}"})
    if act.actor not in ACTORS:
        errors.append({"field": "actor", "message": f"one of {', '.join(sorted(ACTORS))}"})
    if not 1 <= len(act.items) <= MAX_ITEMS:
        errors.append({"field": "items", "message": f"1 to {MAX_ITEMS} items"})
    purposes = [_purpose_for(taxonomy, item, index, errors) for index, item in enumerate(act.items)]
    _fail(errors)
    resolved = [p for p in purposes if p is not None]
    if act.event_type in ("given", "renewed"):
        _check_giving(taxonomy, act, subject, age, resolved)
    return resolved


def _check_giving(
    taxonomy: Taxonomy, act: ConsentAct, subject: Subject, age: int | None, purposes: Sequence[Purpose]
) -> None:
    errors: list[dict[str, str]] = []
    if act.consent_type not in CONSENT_TYPES:
        errors.append({"field": "consent_type", "message": f"one of {', '.join(sorted(CONSENT_TYPES))}"})
    if not (act.notice_id and act.notice_version and act.notice_sha256 and act.language):
        errors.append(
            {"field": "notice", "message": "id, version, sha256 and language of the notice shown are required"}
        )
    _fail(errors)
    jurisdictions = jurisdictions_of(subject)
    regimes = requirements.regimes_of(jurisdictions)
    separate_scopes = set()
    for item, purpose in zip(act.items, purposes, strict=True):
        items = {s.scope for s in requirements.separate_items(taxonomy, purpose, regimes)}
        if item.scope in items:
            separate_scopes.add((purpose.key, item.scope))
        if (
            requirements.needs_explicit(taxonomy, purpose, regimes)
            and act.consent_type not in requirements.EXPLICIT_TYPES
        ):
            raise ValidationFailed(
                f"{purpose.key} needs explicit consent (GDPR Art 9 / explicit basis).",
                errors=[{"field": "consent_type", "message": "explicit, separate or written"}],
                reason="explicit_consent_required",
            )
    if separate_scopes and len(act.items) > 1:
        raise ValidationFailed(
            "Separate consent cannot be bundled with other items: give each separately (PIPL Arts 23, 29, 39).",
            errors=[{"field": "items", "message": "one item per act when an item needs separate consent"}],
            reason="separate_consent_required",
        )
    if separate_scopes and act.consent_type not in requirements.SEPARATE_TYPES | {"guardian"}:
        raise ValidationFailed(
            "This item needs a separate consent act (consent_type separate or written).",
            errors=[{"field": "consent_type", "message": "separate or written"}],
            reason="separate_consent_required",
        )
    if requirements.needs_guardian(taxonomy, jurisdictions, age) and act.actor != "guardian":
        raise ValidationFailed(
            "The subject is a minor in one of their jurisdictions: a guardian must consent.",
            errors=[{"field": "actor", "message": "guardian"}],
            reason="guardian_consent_required",
        )


def _locked_states(session: Session, subject: Subject) -> dict[tuple[str, str], ConsentState]:
    # Serialise consent writes per subject (PostgreSQL row lock; SQLite holds the write lock already).
    session.execute(select(Subject.pk).where(Subject.pk == subject.pk).with_for_update())
    rows = session.scalars(select(ConsentState).where(ConsentState.subject_pk == subject.pk))
    return {(row.purpose_key, row.scope): row for row in rows}


def record_act(
    session: Session,
    keys: FieldKeys,
    taxonomy: Taxonomy,
    subject: Subject,
    act: ConsentAct,
    *,
    recorded_by: str | None,
    today: date | None = None,
) -> list[ConsentEvent]:
    """Validate an act, append its events, update the projection, audit it."""
    age = age_on(birth_date_of(session, keys, subject), today or utcnow().date())
    purposes = _check_act(taxonomy, act, subject, age)
    states = _locked_states(session, subject)
    now = utcnow()
    events = []
    for item, purpose in zip(act.items, purposes, strict=True):
        event = ConsentEvent(
            event_id=uuid.uuid4().hex,
            subject_pk=subject.pk,
            purpose_key=purpose.key,
            purpose_version=purpose.version,
            scope=item.scope,
            event_type=act.event_type,
            consent_type=act.consent_type,
            lawful_basis=",".join(f"{r}:{b}" for r, b in purpose.lawful_basis.items()),
            notice_id=act.notice_id,
            notice_version=act.notice_version,
            notice_sha256=act.notice_sha256,
            language=act.language,
            channel=act.channel,
            actor=act.actor,
            actor_ref=act.actor_ref,
            evidence_ref=act.evidence_ref,
            source=act.source,
            valid_until=act.valid_until,
            recorded_at=now,
            recorded_by=recorded_by,
        )
        current = states.get((purpose.key, item.scope))
        previous = _value(current)
        apply_event(previous, event)  # refuse contradictions before writing anything
        session.add(event)
        session.flush()
        value = apply_event(previous, event)
        states[(purpose.key, item.scope)] = _store_state(session, current, subject, purpose.key, item.scope, value, now)
        events.append(event)
        record(
            session,
            f"consent.{act.event_type}",
            subject_ref=subject.subject_id,
            object_ref=f"consent-event:{event.event_id}",
            purpose=purpose.key if len(purpose.key) <= 80 else None,
            data_categories=[c for c in purpose.data_categories],
            reason_code=act.source if act.source != "api" else None,
            details={"scope": item.scope, "channel": act.channel, "actor": act.actor, "version": purpose.version},
        )
    return events


def _value(row: ConsentState | None) -> StateValue | None:
    if row is None:
        return None
    return StateValue(
        row.status, row.purpose_version, row.consent_type, row.actor, row.source, row.valid_until, row.last_event_pk
    )


def _store_state(
    session: Session,
    row: ConsentState | None,
    subject: Subject,
    purpose: str,
    scope: str,
    value: StateValue,
    now: datetime,
) -> ConsentState:
    if row is None:
        row = ConsentState(subject_pk=subject.pk, purpose_key=purpose, scope=scope)
        session.add(row)
    row.status, row.purpose_version, row.consent_type = value.status, value.purpose_version, value.consent_type
    row.actor, row.source, row.valid_until = value.actor, value.source, value.valid_until
    row.last_event_pk, row.updated_at = value.last_event_pk, now
    session.flush()
    return row


def get_event(session: Session, event_id: str) -> ConsentEvent:
    event = session.scalar(select(ConsentEvent).where(ConsentEvent.event_id == event_id))
    if event is None:
        raise NotFoundError("No such consent event.")
    return event


def current_states(session: Session, subject: Subject) -> list[ConsentState]:
    return list(
        session.scalars(
            select(ConsentState)
            .where(ConsentState.subject_pk == subject.pk)
            .order_by(ConsentState.purpose_key, ConsentState.scope)
        )
    )


def history(session: Session, subject: Subject, *, after_pk: int | None, limit: int) -> list[ConsentEvent]:
    query = select(ConsentEvent).where(ConsentEvent.subject_pk == subject.pk).order_by(ConsentEvent.pk).limit(limit + 1)
    if after_pk is not None:
        query = query.where(ConsentEvent.pk > after_pk)
    return list(session.scalars(query))


def gpc_opt_out_act(taxonomy: Taxonomy, channel: str, exclude: Iterable[str] = ()) -> ConsentAct | None:
    """The opt-out of sale/share that a ``Sec-GPC: 1`` header means (CCPA §7025): purposes resting on opt-out."""
    excluded = set(exclude)
    items = [
        ConsentItem(purpose=p.key)
        for p in taxonomy.purposes.values()
        if p.lawful_basis["ccpa"] == "opt_out" and p.key not in excluded
    ]
    if not items:
        return None
    return ConsentAct(
        event_type="refused", items=items, channel=channel, actor="subject", consent_type="opt_out_signal", source="gpc"
    )


@dataclass(frozen=True)
class HourlyCount:
    """How many events of one type were recorded for one purpose in one UTC hour."""

    purpose: str
    event_type: str
    hour: datetime  # UTC, truncated to the hour
    count: int


def hourly_counts(
    session: Session, since: datetime, event_types: Sequence[str] = ("given", "withdrawn")
) -> list[HourlyCount]:
    """Events per purpose, type and UTC hour since ``since`` (the consent trend of the dashboard; hours so that a
    reader can group them into days of any time zone)."""
    column = ConsentEvent.recorded_at
    if session.get_bind().dialect.name == "sqlite":
        bucket = func.strftime("%Y-%m-%d %H:00:00", column)
    else:
        bucket = func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24:00:00")
    rows = session.execute(
        select(ConsentEvent.purpose_key, ConsentEvent.event_type, bucket.label("hour"), func.count())
        .where(column >= since, ConsentEvent.event_type.in_(list(event_types)))
        .group_by(ConsentEvent.purpose_key, ConsentEvent.event_type, bucket)
    ).all()
    return [
        HourlyCount(purpose, event_type, datetime.fromisoformat(str(hour)).replace(tzinfo=UTC), int(count))
        for purpose, event_type, hour, count in rows
    ]


@dataclass(frozen=True)
class NoticeUse:
    """A privacy notice (id, version, language, SHA-256) as the ledger saw it shown."""

    notice_id: str
    version: str
    language: str
    sha256: str
    events: int
    first_recorded: datetime
    last_recorded: datetime


# A consent event's id is allocated at INSERT and visible at COMMIT: the fold stops below the events of the last
# few minutes, so that no transaction still open can commit an id below where it stopped (as the audit sequencer's
# straggler window). The reader counts everything after the fold's mark, so the page is exact either way.
NOTICE_FOLD_LAG_SECONDS = 180.0
NOTICE_FOLD_CHUNK = 200_000

_NoticeKey = tuple[str, str, str, str]  # notice id, version, language, SHA-256 ("" for a missing part)
_Usage = tuple[int, datetime, datetime]  # events, first and last recorded


def _combined(usage: _Usage | None, more: _Usage) -> _Usage:
    """Two counts of one notice's use as one."""
    if usage is None:
        return more
    return usage[0] + more[0], min(usage[1], more[1]), max(usage[2], more[2])


def _usage_key(row: NoticeUsage) -> _NoticeKey:
    return row.notice_id, row.notice_version, row.language, row.notice_sha256


def _notice_groups(session: Session, above: int, through: int | None = None) -> dict[_NoticeKey, _Usage]:
    """Count, first and last recording time per notice of the consent events with ``above < pk <= through``."""
    bounds = [ConsentEvent.pk > above] + ([ConsentEvent.pk <= through] if through is not None else [])
    rows = session.execute(
        select(
            ConsentEvent.notice_id,
            ConsentEvent.notice_version,
            ConsentEvent.language,
            ConsentEvent.notice_sha256,
            func.count(),
            func.min(ConsentEvent.recorded_at),
            func.max(ConsentEvent.recorded_at),
        )
        .where(ConsentEvent.notice_id.is_not(None), *bounds)
        .group_by(
            ConsentEvent.notice_id, ConsentEvent.notice_version, ConsentEvent.language, ConsentEvent.notice_sha256
        )
    ).all()
    as_utc = ConsentEvent.__table__.c.recorded_at.type.process_result_value
    return {
        (str(notice_id), str(version or ""), str(language or ""), str(sha256 or "")): (
            int(count),
            _aware(as_utc, first),
            _aware(as_utc, last),
        )
        for notice_id, version, language, sha256, count, first, last in rows
    }


def fold_notice_usage(session: Session, now: datetime | None = None, chunk: int = NOTICE_FOLD_CHUNK) -> dict[str, int]:
    """Add the consent events after the fold's mark to ``consent_notice_usage``, at most ``chunk`` of them and
    none of the last NOTICE_FOLD_LAG_SECONDS; the periodic job calls it. The state row is locked, so two
    instances never fold the same events twice."""
    state = session.scalars(select(NoticeUsageState).where(NoticeUsageState.pk == 1).with_for_update()).one()
    cutoff = (now or utcnow()) - timedelta(seconds=NOTICE_FOLD_LAG_SECONDS)
    # the newest event old enough, found from the top of the primary key (only the last minutes are walked)
    settled = session.scalar(
        select(ConsentEvent.pk).where(ConsentEvent.recorded_at <= cutoff).order_by(ConsentEvent.pk.desc()).limit(1)
    )
    through = min(int(settled or 0), state.through_pk + chunk)
    if through <= state.through_pk:
        return {"folded_through": state.through_pk, "notices": 0}
    groups = _notice_groups(session, state.through_pk, through)
    known = {
        _usage_key(row): row
        for row in session.scalars(select(NoticeUsage).where(NoticeUsage.notice_id.in_({key[0] for key in groups})))
    }
    for key, more in groups.items():
        row = known.get(key)
        if row is None:
            row = NoticeUsage(notice_id=key[0], notice_version=key[1], language=key[2], notice_sha256=key[3])
            session.add(row)
            usage = more
        else:
            usage = _combined((row.events, row.first_recorded, row.last_recorded), more)
        row.events, row.first_recorded, row.last_recorded = usage
    state.through_pk = through
    session.flush()
    return {"folded_through": through, "notices": len(groups)}


def notices_in_use(session: Session) -> list[NoticeUse]:
    """Every notice consents were given under, with how often and when it was first and last shown: the fold
    kept by ``fold_notice_usage`` and the events after its mark (a read of the newest events only)."""
    through = session.scalar(select(NoticeUsageState.through_pk).where(NoticeUsageState.pk == 1)) or 0
    totals: dict[_NoticeKey, _Usage] = {
        _usage_key(row): (row.events, row.first_recorded, row.last_recorded)
        for row in session.scalars(select(NoticeUsage))
    }
    for key, more in _notice_groups(session, int(through)).items():
        totals[key] = _combined(totals.get(key), more)
    return [NoticeUse(*key, *totals[key]) for key in sorted(totals)]


def _aware(convert: Any, value: Any) -> datetime:
    """An aggregate's datetime as UTC-aware (SQLite returns min/max of a column as text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return convert(value, None)
