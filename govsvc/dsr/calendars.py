"""Business-day calendars (``policies/dsr/calendars.yaml``): weekends, days off and make-up working days.

A calendar only answers "is this a working day?" and counts working days; what a deadline is lives in
``govsvc.dsr.deadlines``. Dates outside the years a calendar covers are still answered (weekends only) and
reported by ``coverage_notes`` so that a deadline computed on them says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from govsvc.core.errors import ValidationFailed


@dataclass(frozen=True)
class Calendar:
    key: str
    weekend: frozenset[int]  # ISO weekdays: 6 Saturday, 7 Sunday
    holidays: frozenset[date] = frozenset()
    working_weekends: frozenset[date] = frozenset()
    years: frozenset[int] = frozenset()
    provisional_years: frozenset[int] = frozenset()
    names: Mapping[date, str] = field(default_factory=dict)

    def is_working_day(self, day: date) -> bool:
        if day in self.working_weekends:
            return True
        if day in self.holidays:
            return False
        return day.isoweekday() not in self.weekend

    def add_working_days(self, start: date, count: int) -> date:
        """The ``count``-th working day after ``start`` (``start`` itself is not counted)."""
        day = start
        remaining = count
        while remaining > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                remaining -= 1
        return day

    def next_working_day(self, day: date) -> date:
        """``day`` if it is a working day, else the first working day after it."""
        while not self.is_working_day(day):
            day += timedelta(days=1)
        return day

    def working_days_between(self, start: date, end: date) -> int:
        """Working days in (start, end]: how many working days a pause from ``start`` to ``end`` took."""
        return sum(1 for offset in range(1, (end - start).days + 1) if self.is_working_day(start + timedelta(offset)))

    def coverage_notes(self, start: date, end: date) -> list[str]:
        """Why a result spanning ``start``..``end`` may be off: years not covered, or provisional."""
        notes = []
        for year in range(start.year, end.year + 1):
            if self.years and year not in self.years:
                notes.append(f"calendar {self.key} has no holiday data for {year}: weekends only")
            elif year in self.provisional_years:
                notes.append(f"calendar {self.key} for {year} is provisional (not the official schedule)")
        return notes


def _dates(entry: Mapping[str, Any], where: str, errors: list[dict[str, str]]) -> list[date]:
    if "date" in entry:
        value = entry["date"]
        if not isinstance(value, date):
            errors.append({"field": where, "message": "date must be YYYY-MM-DD"})
            return []
        return [value]
    start, end = entry.get("from"), entry.get("to")
    if not isinstance(start, date) or not isinstance(end, date) or end < start or (end - start).days > 31:
        errors.append({"field": where, "message": "from/to must be dates, to >= from, at most 31 days apart"})
        return []
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


def parse_calendars(document: Mapping[str, Any]) -> dict[str, Calendar]:
    """Validate ``calendars.yaml``; ValidationFailed names every bad entry."""
    errors: list[dict[str, str]] = []
    calendars: dict[str, Calendar] = {}
    raw_calendars = document.get("calendars")
    if not isinstance(raw_calendars, dict) or not raw_calendars:
        raise ValidationFailed("calendars.yaml needs a 'calendars' mapping.")
    for key, raw in raw_calendars.items():
        where = f"calendars.{key}"
        if not isinstance(raw, dict):
            errors.append({"field": where, "message": "must be a mapping"})
            continue
        weekend = raw.get("weekend", [6, 7])
        if not isinstance(weekend, list) or not all(isinstance(d, int) and 1 <= d <= 7 for d in weekend):
            errors.append({"field": f"{where}.weekend", "message": "ISO weekday numbers 1-7"})
            weekend = [6, 7]
        names: dict[date, str] = {}
        holidays: set[date] = set()
        working: set[date] = set()
        for kind, target in (("holidays", holidays), ("working_weekends", working)):
            for index, entry in enumerate(raw.get(kind) or []):
                if not isinstance(entry, dict):
                    errors.append({"field": f"{where}.{kind}[{index}]", "message": "must be a mapping"})
                    continue
                for day in _dates(entry, f"{where}.{kind}[{index}]", errors):
                    target.add(day)
                    names[day] = str(entry.get("name", ""))
        clash = holidays & working
        if clash:
            errors.append({"field": where, "message": f"both holiday and working day: {sorted(clash)[0]}"})
        calendars[key] = Calendar(
            key=key,
            weekend=frozenset(weekend),
            holidays=frozenset(holidays),
            working_weekends=frozenset(working),
            years=frozenset(raw.get("years") or []),
            provisional_years=frozenset(raw.get("provisional_years") or []),
            names=names,
        )
    if errors:
        raise ValidationFailed("calendars.yaml is invalid.", errors=errors)
    return calendars
