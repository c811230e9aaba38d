"""Which deadlines a referral owes, which fell due, and the referral figures (R15)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.referrals.coverage import ALWAYS
from services.referrals.deadlines import Kind, Terms, fallen_due, owed
from services.referrals.reports import Breach, Delivered, referral_report
from services.referrals.states import State

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TERMS = Terms(acknowledge_hours=24, answer_hours=72, expire_hours=168, propose_next_partner=True)


def test_a_delivered_referral_owes_all_three_from_its_delivery() -> None:
    found = owed(State.DELIVERED, T0, TERMS, ALWAYS)
    assert [(d.kind, d.due_at - T0) for d in found] == [
        (Kind.ACKNOWLEDGE, timedelta(hours=24)),
        (Kind.ANSWER, timedelta(hours=72)),
        (Kind.EXPIRE, timedelta(hours=168)),
    ]


def test_an_acknowledged_referral_still_owes_the_answer_counted_from_delivery() -> None:
    found = owed(State.ACKNOWLEDGED, T0, TERMS, ALWAYS)
    assert [d.kind for d in found] == [Kind.ANSWER, Kind.EXPIRE]
    assert found[0].due_at == T0 + timedelta(hours=72)


def test_answered_ended_or_undelivered_referrals_owe_nothing() -> None:
    for state in (State.ACCEPTED, State.DECLINED, State.COMPLETED, State.WITHDRAWN):
        assert owed(state, T0, TERMS, ALWAYS) == []
    assert owed(State.MADE, None, TERMS, ALWAYS) == []


def test_fallen_due_is_inclusive_and_skips_what_fired() -> None:
    found = owed(State.DELIVERED, T0, TERMS, ALWAYS)
    at = T0 + timedelta(hours=24)
    assert [d.kind for d in fallen_due(found, at - timedelta(seconds=1), set())] == []
    assert [d.kind for d in fallen_due(found, at, set())] == [Kind.ACKNOWLEDGE]
    assert fallen_due(found, at, {Kind.ACKNOWLEDGE}) == []
    late = T0 + timedelta(days=30)  # a worker down for a month fires all three, in order
    assert [d.kind for d in fallen_due(found, late, set())] == list(Kind)


def test_the_report_suppresses_small_counts_and_medians() -> None:
    many = [
        Delivered("shelter", "state-a", T0, T0 + timedelta(hours=h)) for h in range(1, 13)
    ]  # 12 delivered and acknowledged: hours 1..12, median 6.5
    few = [Delivered("legal_aid", "state-a", T0, T0 + timedelta(hours=2)) for _ in range(3)]
    breaches = [Breach("shelter", "state-a", "acknowledge")] * 11 + [
        Breach("shelter", "state-a", "answer")
    ]
    report = referral_report(many + few, breaches, limit=11)
    assert report.threshold == 11
    (row,) = report.rows  # legal_aid: every count below 11, so the row is left out
    assert row.partner_type == "shelter"
    assert row.delivered == 12 and row.acknowledged == 12
    assert row.median_hours_to_acknowledge == 6.5
    assert row.acknowledge_breaches == 11
    assert row.answer_breaches is None and row.expiries is None


def test_a_median_over_too_few_acknowledgements_is_suppressed() -> None:
    rows = [Delivered("shelter", "state-a", T0, None) for _ in range(11)]
    rows += [Delivered("shelter", "state-a", T0, T0 + timedelta(hours=1))]
    (row,) = referral_report(rows, [], limit=11).rows
    assert row.delivered == 12
    assert row.acknowledged is None and row.median_hours_to_acknowledge is None
