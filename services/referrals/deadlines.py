"""Which deadlines a referral has, and which have fallen due. Pure.

The policy (``policies/accord/deadlines``, rule R12) says how many hours; the partner's coverage
hours (``coverage.py``) say how they count. Both clocks start when the relay delivered the
referral, so a partner that acknowledges late does not earn more time to answer:

- ``acknowledge``: the referral is still ``delivered`` (not acknowledged) ``acknowledge_hours``
  after delivery;
- ``answer``: it is still ``delivered`` or ``acknowledged`` (neither accepted nor declined)
  ``answer_hours`` after delivery;
- ``expire``: still unanswered ``expire_hours`` after delivery: the referral is moved to
  ``expired`` and the referrer may re-refer.

A breach fires once per referral and kind (the worker's ``referral_breaches`` row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.referrals.coverage import CoverageHours, add_covered
from services.referrals.states import State


class Kind(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    ANSWER = "answer"
    EXPIRE = "expire"


# The states in which each deadline is still owed.
OWED: dict[Kind, frozenset[State]] = {
    Kind.ACKNOWLEDGE: frozenset({State.DELIVERED}),
    Kind.ANSWER: frozenset({State.DELIVERED, State.ACKNOWLEDGED}),
    Kind.EXPIRE: frozenset({State.DELIVERED, State.ACKNOWLEDGED}),
}
HOURS: dict[Kind, str] = {
    Kind.ACKNOWLEDGE: "acknowledge_hours",
    Kind.ANSWER: "answer_hours",
    Kind.EXPIRE: "expire_hours",
}


@dataclass(frozen=True)
class Terms:
    """The policy's answer for a partner type in a jurisdiction."""

    acknowledge_hours: float
    answer_hours: float
    expire_hours: float
    propose_next_partner: bool

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Terms:
        return cls(
            acknowledge_hours=float(doc["acknowledge_hours"]),
            answer_hours=float(doc["answer_hours"]),
            expire_hours=float(doc["expire_hours"]),
            propose_next_partner=bool(doc["propose_next_partner"]),
        )

    def hours(self, kind: Kind) -> float:
        return float(getattr(self, HOURS[kind]))


@dataclass(frozen=True)
class Deadline:
    kind: Kind
    due_at: datetime


def owed(
    state: State, delivered_at: datetime | None, terms: Terms, coverage: CoverageHours
) -> list[Deadline]:
    """The deadlines a referral in ``state`` still owes, earliest first."""
    if delivered_at is None:
        return []
    found = [
        Deadline(kind, add_covered(delivered_at, terms.hours(kind), coverage))
        for kind, states in OWED.items()
        if state in states
    ]
    return sorted(found, key=lambda d: (d.due_at, d.kind.value))


def fallen_due(deadlines: list[Deadline], now: datetime, fired: set[Kind]) -> list[Deadline]:
    """The deadlines due at ``now`` that have not fired yet."""
    return [d for d in deadlines if d.due_at <= now and d.kind not in fired]
