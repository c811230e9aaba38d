"""A partner's coverage hours, and deadlines counted in them. Pure.

A partner that answers around the clock (``None`` or ``{"kind": "always"}``) has a 24-hour
deadline 24 hours after delivery. A business-hours partner's clock runs only in its hours, in
its own time zone (daylight saving included): a referral delivered on Friday at 16:00 to a
partner open 09:00–17:00 on weekdays, with 24 hours to acknowledge, falls due on Wednesday at
16:00 (1 hour on Friday, 8 on Monday and on Tuesday, 7 on Wednesday).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

WEEKDAYS = (1, 2, 3, 4, 5)


class CoverageHours(BaseModel):
    """How a partner's deadlines count: ``always`` (24/7), or ``business_hours`` on ``days``
    (ISO weekdays, 1 = Monday) from ``opens`` to ``closes`` in ``time_zone``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(default="always", pattern="^(always|business_hours)$")
    time_zone: str = Field(default="UTC", max_length=64)
    days: tuple[int, ...] = WEEKDAYS
    opens: time = time(9, 0)
    closes: time = time(17, 0)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not a known IANA time zone") from None
        return value

    @field_validator("days")
    @classmethod
    def _iso_days(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(d not in range(1, 8) for d in value) or len(set(value)) != len(value):
            raise ValueError("days are distinct ISO weekdays, 1 (Monday) to 7 (Sunday)")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _opens_before_closes(self) -> CoverageHours:
        if self.kind == "business_hours" and not self.opens < self.closes:
            raise ValueError("opens must be before closes (hours within one day)")
        return self


ALWAYS = CoverageHours()


def coverage_of(stored: dict[str, Any] | None) -> CoverageHours:
    """The partner's stored coverage (JSON column), ``always`` when none is recorded."""
    return ALWAYS if not stored else CoverageHours.model_validate(stored)


@dataclass(frozen=True)
class _Window:
    start: datetime
    end: datetime


def _windows_from(start: datetime, c: CoverageHours) -> Any:
    """The coverage windows (UTC) that end after ``start``, in order, for ever."""
    zone = ZoneInfo(c.time_zone)
    day = start.astimezone(zone).date()
    while True:
        if day.isoweekday() in c.days:
            # Wall-clock times in the zone; fold=0 picks the first of a repeated hour.
            opens = datetime.combine(day, c.opens, zone).astimezone(UTC)
            closes = datetime.combine(day, c.closes, zone).astimezone(UTC)
            if closes > start:
                yield _Window(max(opens, start), closes)
        day += timedelta(days=1)


def add_covered(start: datetime, hours: float, c: CoverageHours) -> datetime:
    """The instant ``hours`` of coverage after ``start`` (an aware datetime)."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    left = timedelta(hours=hours)
    if c.kind == "always" or left <= timedelta(0):
        return start + left
    for w in _windows_from(start, c):
        span = w.end - w.start
        if left <= span:
            due: datetime = w.start + left
            return due
        left -= span
    raise AssertionError("unreachable: the windows never end")  # pragma: no cover
