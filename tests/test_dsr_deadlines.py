"""DSR deadline arithmetic from the jurisdiction profiles: month ends, weekends, holidays and China's make-up
working days, the strictest regime, pauses and extensions, time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from govsvc.core.errors import ValidationFailed
from govsvc.dsr.calendars import parse_calendars
from govsvc.dsr.deadlines import Pause, add_months
from govsvc.dsr.rules import load_rules
from tests.conftest import POLICY_DIR

RULES = load_rules(POLICY_DIR)
DEADLINES = RULES.deadlines


def at(day: str, hour: int = 3) -> datetime:
    """A receipt time that is the same calendar day in Shanghai, Brussels and Los Angeles... mostly: 03:00 UTC is
    11:00 in Shanghai, 04:00/05:00 in Brussels and the previous evening in Los Angeles, so CCPA tests use 18:00."""
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def due(regime: str, request_type: str, received: datetime, **kwargs) -> date:
    return DEADLINES.regime_schedule(regime, request_type, received, **kwargs).due


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2025, 1, 31), 1, date(2025, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(2025, 3, 31), 1, date(2025, 4, 30)),
        (date(2025, 1, 15), 1, date(2025, 2, 15)),
        (date(2024, 11, 30), 3, date(2025, 2, 28)),
        (date(2025, 12, 31), 2, date(2026, 2, 28)),
    ],
)
def test_months_end_on_the_same_date_or_the_last_day_of_the_month(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_gdpr_one_month_crosses_month_ends_and_rolls_off_weekends() -> None:
    assert due("gdpr", "access", at("2025-01-31")) == date(2025, 2, 28)  # Friday
    assert due("gdpr", "access", at("2024-01-31")) == date(2024, 2, 29)  # Thursday, leap year
    assert due("gdpr", "access", at("2025-02-01")) == date(2025, 3, 3)  # Mar 1 is a Saturday -> Monday
    assert due("gdpr", "access", at("2025-04-30")) == date(2025, 5, 30)
    schedule = DEADLINES.regime_schedule("gdpr", "erasure", at("2024-11-30"))
    assert schedule.max_extended_due == date(2025, 2, 28)  # receipt + 3 months, not due + 2 months
    assert schedule.extension_allowed and schedule.ack_due is None


def test_ccpa_counts_calendar_days_with_receipt_as_day_one_and_business_days_for_acknowledgement() -> None:
    received = at("2025-01-31", 18)  # 10:00 in Los Angeles
    schedule = DEADLINES.regime_schedule("ccpa", "access", received)
    assert schedule.due == date(2025, 3, 16)  # day 45 is a Sunday: no roll-forward
    assert schedule.max_extended_due == date(2025, 4, 30)  # day 90
    assert schedule.ack_due == date(2025, 2, 14)  # 10 business days
    # Presidents' Day (Feb 17, 2025) is a California state holiday: not a business day
    assert DEADLINES.regime_schedule("ccpa", "erasure", at("2025-02-10", 18)).ack_due == date(2025, 2, 25)


def test_ccpa_opt_outs_take_15_business_days_and_no_extension() -> None:
    schedule = DEADLINES.regime_schedule("ccpa", "opt_out_sale_share", at("2025-01-31", 18))
    assert schedule.due == date(2025, 2, 24)
    assert not schedule.extension_allowed and schedule.ack_due is None
    assert RULES.verification_level(["ccpa"], "opt_out_sale_share") == "none"
    assert RULES.verification_level(["ccpa", "gdpr"], "limit_spi") == "none"


def test_pipl_counts_chinese_working_days_over_holidays_and_make_up_days() -> None:
    # Spring Festival 2025: Jan 28 - Feb 4 off; Sunday Jan 26 and Saturday Feb 8 are working days.
    assert due("pipl", "erasure", at("2025-01-20")) == date(2025, 2, 14)
    # National Day and Mid-Autumn 2025: Oct 1-8 off; Sunday Sep 28 and Saturday Oct 11 are working days.
    assert due("pipl", "access", at("2025-09-20")) == date(2025, 10, 16)
    # Without the make-up days it would end two working days later: they count.
    calendar = RULES.calendars["cn"]
    assert calendar.is_working_day(date(2025, 9, 28)) and calendar.is_working_day(date(2025, 10, 11))
    assert not calendar.is_working_day(date(2025, 10, 8)) and not calendar.is_working_day(date(2025, 10, 5))
    # 2026 Spring Festival: Feb 15-23 off; Saturdays Feb 14 and Feb 28 worked
    assert due("pipl", "access", at("2026-02-09")) == date(2026, 3, 6)  # 4 + Feb 14 + 4 + Feb 28 + 5
    assert not DEADLINES.regime_schedule("pipl", "access", at("2025-01-20")).extension_allowed


def test_receipt_date_is_the_local_date_of_the_regime() -> None:
    late_evening_utc = datetime(2025, 1, 31, 17, 0, tzinfo=UTC)  # already Feb 1 in Shanghai
    schedule = DEADLINES.regime_schedule("pipl", "access", late_evening_utc)
    assert schedule.received_local == date(2025, 2, 1)
    assert schedule.due_at.tzinfo is not None and schedule.due_at.astimezone(UTC).hour == 15  # 23:59:59 in Shanghai


def test_the_strictest_regime_wins() -> None:
    schedule = DEADLINES.schedule(["gdpr", "pipl"], "access", at("2025-01-20"))
    assert schedule.governing_regime == "pipl"
    assert schedule.due_at == DEADLINES.regime_schedule("pipl", "access", at("2025-01-20")).due_at
    assert not schedule.extension_allowed  # PIPL has none: the strictest wins
    both = DEADLINES.schedule(["gdpr", "ccpa"], "access", at("2025-01-31", 18))
    assert both.governing_regime == "gdpr" and both.ack_due_at is not None  # CCPA's acknowledgement still applies
    extended = {s.regime: s.max_extended_due_at for s in both.regimes}
    assert both.max_extended_due_at == min(extended.values()) == extended["gdpr"]  # Apr 30 in Brussels, not LA
    assert RULES.verification_level(["gdpr", "ccpa"], "access") == "high"


def test_pauses_move_the_due_date_only_where_allowed() -> None:
    received = at("2025-01-06")
    pause = Pause(received + timedelta(days=2), received + timedelta(days=12))
    assert due("gdpr", "access", received) == date(2025, 2, 6)
    assert due("gdpr", "access", received, pauses=[pause]) == date(2025, 2, 17)  # Feb 16 is a Sunday
    # working-day regimes move by the working days paused (Jan 8 -> Jan 18: 8 working days)
    assert due("pipl", "access", received, pauses=[pause]) > due("pipl", "access", received)
    assert DEADLINES.pause_allowed(["ccpa"], "awaiting_identity") == ["ccpa"]
    assert DEADLINES.pause_allowed(["gdpr", "pipl"], "awaiting_identity") == []
    assert DEADLINES.pause_allowed(["gdpr", "pipl"], "awaiting_clarification") == ["pipl"]


def test_years_without_official_calendars_are_flagged() -> None:
    provisional = DEADLINES.regime_schedule("pipl", "access", at("2027-01-25"))
    assert any("provisional" in note for note in provisional.notes)
    beyond = DEADLINES.regime_schedule("pipl", "access", at("2028-03-01"))
    assert any("no holiday data for 2028" in note for note in beyond.notes)


def test_calendar_files_are_validated() -> None:
    with pytest.raises(ValidationFailed) as error:
        parse_calendars(
            {
                "calendars": {
                    "x": {
                        "holidays": [{"date": date(2025, 1, 1)}, {"from": date(2025, 2, 3), "to": date(2025, 2, 1)}],
                        "working_weekends": [{"date": date(2025, 1, 1)}],
                    }
                }
            }
        )
    messages = " ".join(e["message"] for e in error.value.errors or [])
    assert "to >= from" in messages and "both holiday and working day" in messages
