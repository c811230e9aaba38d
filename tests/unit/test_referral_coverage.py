"""Deadlines counted in a partner's coverage hours: around the clock, business hours in the
partner's time zone, across weekends and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.referrals.coverage import ALWAYS, CoverageHours, add_covered, coverage_of

NY = ZoneInfo("America/New_York")
OFFICE = CoverageHours(kind="business_hours", time_zone="America/New_York")


def ny(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


def test_around_the_clock_is_plain_addition() -> None:
    start = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
    assert add_covered(start, 24, ALWAYS) == start + timedelta(hours=24)
    assert coverage_of(None) == ALWAYS and coverage_of({}) == ALWAYS


def test_business_hours_skip_nights_and_the_weekend() -> None:
    # Friday 16:00: 1 h on Friday, 8 on Monday, 8 on Tuesday, 7 on Wednesday.
    due = add_covered(ny(2026, 12, 4, 16, 0), 24, OFFICE)
    assert due == ny(2026, 12, 9, 16, 0)
    assert due.astimezone(NY).isoweekday() == 3


def test_a_delivery_outside_hours_starts_counting_when_the_office_opens() -> None:
    # Saturday night: the clock starts Monday 09:00.
    assert add_covered(ny(2026, 12, 5, 22, 0), 1, OFFICE) == ny(2026, 12, 7, 10, 0)
    # Before opening on a weekday.
    assert add_covered(ny(2026, 12, 8, 6, 30), 2, OFFICE) == ny(2026, 12, 8, 11, 0)


def test_a_deadline_at_closing_time_is_due_at_closing_time() -> None:
    assert add_covered(ny(2026, 12, 8, 9, 0), 8, OFFICE) == ny(2026, 12, 8, 17, 0)


def test_daylight_saving_keeps_the_office_s_wall_clock_hours() -> None:
    # 2026-03-08: New York moves from UTC-5 to UTC-4. Friday 16:00 EST + 2 covered hours is
    # Monday 10:00 EDT, 14:00 UTC (not 15:00).
    due = add_covered(ny(2026, 3, 6, 16, 0), 2, OFFICE)
    assert due == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)
    assert add_covered(ny(2026, 3, 6, 16, 0), 2, ALWAYS) == ny(2026, 3, 6, 18, 0)


def test_other_days_and_hours() -> None:
    weekend_desk = CoverageHours(
        kind="business_hours", time_zone="UTC", days=(6, 7), opens=time(10), closes=time(14)
    )
    monday = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert add_covered(monday, 5, weekend_desk) == datetime(2026, 12, 13, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "business_hours", "time_zone": "Mars/Olympus"},
        {"kind": "business_hours", "opens": "17:00", "closes": "09:00"},
        {"kind": "business_hours", "days": [0, 1]},
        {"kind": "business_hours", "days": []},
        {"kind": "sometimes"},
        {"kind": "always", "extra": 1},
    ],
)
def test_bad_coverage_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CoverageHours.model_validate(bad)


def test_a_naive_start_is_refused() -> None:
    with pytest.raises(ValueError):
        add_covered(datetime(2026, 12, 4, 16, 0), 1, OFFICE)
