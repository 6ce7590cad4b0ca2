"""Deadline arithmetic for data-subject requests, from the jurisdiction profiles in ``policies/dsr/deadlines.yaml``.

Every regime that applies to a request gets its own schedule (acknowledgement, answer, longest extension); the
strictest wins: the earliest of each date. Dates are computed in the regime's time zone from the receipt time and
end at the last moment of the due day there.

- ``months``: Reg. 1182/71 Art 3: the period runs from the day after receipt and ends on the same date of the
  last month, or that month's last day when the date does not exist (Jan 31 + 1 month = Feb 28/29); with
  ``roll_forward`` a period ending on a weekend or holiday ends on the next working day (Art 3(4)).
- ``calendar_days``: the receipt day plus ``count`` days, or ``count - 1`` when ``receipt_is_day_1`` (CCPA
  §7021(b): 45 days with the day of receipt as day 1); no roll-forward.
- ``working_days`` / ``business_days``: the ``count``-th working day of the calendar after the day of receipt.

Clock pauses (recorded with start and end) push the dates by the paused time: calendar days for month and
calendar-day periods, the working days paused for working-day periods.
"""

from __future__ import annotations

import calendar as month_calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from govsvc.core.errors import ValidationFailed
from govsvc.dsr.calendars import Calendar

UNITS = frozenset({"months", "calendar_days", "working_days", "business_days"})
TIMEZONES = {"cn": "Asia/Shanghai", "us-ca": "America/Los_Angeles", "eu": "Europe/Brussels"}


@dataclass(frozen=True)
class Period:
    unit: str
    count: int
    roll_forward: bool = False
    receipt_is_day_1: bool = False
    only_before_due: bool = True
    notice_required: bool = False


@dataclass(frozen=True)
class Profile:
    """One regime's DSR rules (``deadlines.yaml`` profiles)."""

    key: str
    name: Mapping[str, str]
    calendar: str
    timezone: str
    response: Period
    acknowledgement: Period | None
    extension: Period | None
    pause_reasons: frozenset[str]
    legal_basis: str
    authority: Mapping[str, str]
    statutory_note: str | None = None
    request_types: Mapping[str, Mapping[str, Period | None]] = field(default_factory=dict)

    def rule(self, request_type: str, name: str) -> Period | None:
        """The period ``name`` (response, acknowledgement, extension) for a request type."""
        overrides = self.request_types.get(request_type, {})
        if name in overrides:
            return overrides[name]
        return getattr(self, name)


def add_months(day: date, months: int) -> date:
    """The same date ``months`` later, or the last day of that month when the date does not exist there."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, month_calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Pause:
    start: datetime
    end: datetime | None  # None: still paused (counted up to ``now``)


def due_date(period: Period, received: date, calendar: Calendar, paused: Sequence[tuple[date, date]] = ()) -> date:
    """The last day of ``period`` for a request received on ``received`` (local date), after ``paused`` intervals."""
    if period.unit == "months":
        end = add_months(received, period.count)
        end += timedelta(days=sum((stop - start).days for start, stop in paused))
        return calendar.next_working_day(end) if period.roll_forward else end
    if period.unit == "calendar_days":
        end = received + timedelta(days=period.count - (1 if period.receipt_is_day_1 else 0))
        end += timedelta(days=sum((stop - start).days for start, stop in paused))
        return calendar.next_working_day(end) if period.roll_forward else end
    extra = sum(calendar.working_days_between(start, stop) for start, stop in paused)
    return calendar.add_working_days(received, period.count + extra)


def end_of_day(day: date, zone: str) -> datetime:
    """The last microsecond of ``day`` in time zone ``zone``, in UTC."""
    return datetime.combine(day, time.max, tzinfo=ZoneInfo(zone)).astimezone(UTC)


@dataclass(frozen=True)
class RegimeSchedule:
    regime: str
    received_local: date
    ack_due: date | None
    due: date
    max_extended_due: date
    ack_due_at: datetime | None
    due_at: datetime
    max_extended_due_at: datetime
    extension_allowed: bool
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "regime": self.regime,
            "received_local_date": self.received_local.isoformat(),
            "ack_due": self.ack_due.isoformat() if self.ack_due else None,
            "due": self.due.isoformat(),
            "max_extended_due": self.max_extended_due.isoformat(),
            "extension_allowed": self.extension_allowed,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Schedule:
    """The deadlines of one request: each regime's, and the strictest of them."""

    regimes: tuple[RegimeSchedule, ...]
    ack_due_at: datetime | None
    due_at: datetime
    max_extended_due_at: datetime
    governing_regime: str  # whose due date is the earliest

    @property
    def extension_allowed(self) -> bool:
        return self.max_extended_due_at > self.due_at


class Deadlines:
    """Computes schedules from the profiles and calendars."""

    def __init__(self, profiles: Mapping[str, Profile], calendars: Mapping[str, Calendar]) -> None:
        self.profiles = profiles
        self.calendars = calendars

    def regime_schedule(
        self,
        regime: str,
        request_type: str,
        received_at: datetime,
        pauses: Iterable[Pause] = (),
        *,
        now: datetime | None = None,
    ) -> RegimeSchedule:
        profile = self.profiles[regime]
        calendar = self.calendars[profile.calendar]
        zone = ZoneInfo(profile.timezone)
        received = received_at.astimezone(zone).date()
        now = now or datetime.now(UTC)
        paused = [(pause.start.astimezone(zone).date(), (pause.end or now).astimezone(zone).date()) for pause in pauses]
        response = profile.rule(request_type, "response")
        assert response is not None
        due = due_date(response, received, calendar, paused)
        acknowledgement = profile.rule(request_type, "acknowledgement")
        ack_due = due_date(acknowledgement, received, calendar) if acknowledgement else None
        extension = profile.rule(request_type, "extension")
        extended = due_date(extension, received, calendar, paused) if extension else due
        extended = max(extended, due)
        notes = calendar.coverage_notes(received, extended)
        if profile.statutory_note:
            notes.append(profile.statutory_note)
        return RegimeSchedule(
            regime=regime,
            received_local=received,
            ack_due=ack_due,
            due=due,
            max_extended_due=extended,
            ack_due_at=end_of_day(ack_due, profile.timezone) if ack_due else None,
            due_at=end_of_day(due, profile.timezone),
            max_extended_due_at=end_of_day(extended, profile.timezone),
            extension_allowed=extended > due,
            notes=tuple(notes),
        )

    def schedule(
        self,
        regimes: Iterable[str],
        request_type: str,
        received_at: datetime,
        pauses: Iterable[Pause] = (),
        *,
        now: datetime | None = None,
    ) -> Schedule:
        """Every regime's schedule and the strictest dates (earliest acknowledgement, answer and extension)."""
        pauses = list(pauses)
        schedules = tuple(
            self.regime_schedule(regime, request_type, received_at, pauses, now=now) for regime in sorted(set(regimes))
        )
        if not schedules:
            raise ValidationFailed("A request needs at least one jurisdiction.")
        governing = min(schedules, key=lambda s: (s.due_at, s.regime))
        acks = [s.ack_due_at for s in schedules if s.ack_due_at is not None]
        return Schedule(
            regimes=schedules,
            ack_due_at=min(acks) if acks else None,
            due_at=governing.due_at,
            max_extended_due_at=min(s.max_extended_due_at for s in schedules),
            governing_regime=governing.regime,
        )

    def pause_allowed(self, regimes: Iterable[str], reason: str) -> list[str]:
        """The regimes that forbid pausing the clock for ``reason`` (empty: allowed)."""
        return sorted(r for r in set(regimes) if reason not in self.profiles[r].pause_reasons)


def parse_period(raw: Any, where: str, errors: list[dict[str, str]]) -> Period | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("unit") not in UNITS:
        errors.append({"field": where, "message": f"unit: one of {', '.join(sorted(UNITS))}"})
        return None
    count = raw.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 366:
        errors.append({"field": f"{where}.count", "message": "an integer between 1 and 366"})
        return None
    unknown = set(raw) - {"unit", "count", "roll_forward", "receipt_is_day_1", "only_before_due", "notice_required"}
    if unknown:
        errors.append({"field": where, "message": f"unknown fields: {', '.join(sorted(unknown))}"})
    return Period(
        unit=raw["unit"] if raw["unit"] != "business_days" else "working_days",
        count=count,
        roll_forward=bool(raw.get("roll_forward", False)),
        receipt_is_day_1=bool(raw.get("receipt_is_day_1", False)),
        only_before_due=bool(raw.get("only_before_due", True)),
        notice_required=bool(raw.get("notice_required", False)),
    )
