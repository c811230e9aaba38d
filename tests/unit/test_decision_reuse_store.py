"""The decision reuse store and the reusing decide stage (pure logic; the differential test
against the real OPA is tests/integration/test_decision_reuse.py)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.broker.pipeline import reuse
from services.broker.pipeline.decide import Planned, Question, decide_all
from services.broker.pipeline.model import Decision, InboundEvent, Recipient

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ITEM: dict[str, Any] = {
    "now": "2026-11-24T12:00:00Z",
    "purpose": "service_referral",
    "event": {
        "id": "evt-1",
        "type": "accord.referral.made",
        "time": "2026-11-24T11:59:00Z",
        "agency": {"id": "agency-a", "jurisdiction": "state-a"},
        "survivor": {"id": "sv-1", "age": 24},
        "fields": ["age", "phone"],
    },
    "partner": {"id": "p-1", "type": "shelter", "agreements": [], "training_attested_until": None},
    "consents": [{"id": "c-1", "version": 1, "status": "active", "provisions": []}],
    "declarations": [],
    "court_orders": [],
}


def test_the_key_ignores_event_id_time_survivor_fields_and_now_only() -> None:
    same = copy.deepcopy(ITEM)
    same["event"].update(
        id="evt-2", time="2026-11-24T11:00:00Z", survivor={"id": "sv-2", "age": 24}, fields=["age"]
    )
    same["now"] = "2026-11-25T00:00:00Z"
    assert reuse.reuse_key(same, "r1") == reuse.reuse_key(ITEM, "r1")
    changed: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
        ("/purpose", lambda d: d.update(purpose="care_coordination")),
        ("consent version", lambda d: d["consents"][0].update(version=2)),
        ("consent status", lambda d: d["consents"][0].update(status="revoked")),
        ("age", lambda d: d["event"]["survivor"].update(age=17)),
        ("agency", lambda d: d["event"]["agency"].update(id="agency-b")),
        ("jurisdiction", lambda d: d["event"]["agency"].update(jurisdiction="state-b")),
        ("partner", lambda d: d["partner"].update(status="suspended")),
        ("training", lambda d: d["partner"].update(training_attested_until="2027-01-01T00:00:00Z")),
        ("declarations", lambda d: d.update(declarations=[{"id": "d-1"}])),
        ("court orders", lambda d: d.update(court_orders=[{"id": "o-1"}])),
        ("an absent list", lambda d: d.pop("court_orders")),
    ]
    for what, change in changed:
        other = copy.deepcopy(ITEM)
        change(other)
        assert reuse.reuse_key(other, "r1") != reuse.reuse_key(ITEM, "r1"), what
    assert reuse.reuse_key(ITEM, "r2") != reuse.reuse_key(ITEM, "r1")


def test_an_entry_holds_from_its_decision_until_valid_until() -> None:
    store: reuse.ReuseStore[str] = reuse.ReuseStore(10)
    key = reuse.reuse_key(ITEM, "r1")
    store.put(key, "d", decided_ns=100, until=200)
    assert store.get(key, 99) is None  # before it was decided: not known to hold
    store.put(key, "d", decided_ns=100, until=200)
    assert store.get(key, 100) == "d"
    assert store.get(key, 199) == "d"
    assert store.get(key, 200) is None  # the first instant it may change
    assert len(store) == 0  # and it is gone
    store.put(key, "open", decided_ns=100, until=None)
    assert store.get(key, 10**19) == "open"
    assert (store.stats.hits, store.stats.expired) == (3, 2)


def test_the_store_is_bounded_least_recently_used_first() -> None:
    store: reuse.ReuseStore[int] = reuse.ReuseStore(2)
    keys = [("r", bytes([i]), b"") for i in range(3)]
    store.put(keys[0], 0, decided_ns=0, until=None)
    store.put(keys[1], 1, decided_ns=0, until=None)
    assert store.get(keys[0], 1) == 0  # now the most recently used
    store.put(keys[2], 2, decided_ns=0, until=None)
    assert len(store) == 2 and store.stats.evicted == 1
    assert store.get(keys[1], 1) is None and store.get(keys[0], 1) == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"valid_until": 5}, 5),
        ({"valid_until": None}, None),
        ({}, False),
        ({"valid_until": "5"}, False),
        ({"valid_until": True}, False),
        (None, False),
    ],
)
def test_valid_until_is_trusted_only_as_the_policy_gives_it(raw: Any, expected: Any) -> None:
    assert reuse.valid_until(raw) is expected or reuse.valid_until(raw) == expected


PLAN: dict[str, Any] = {
    "allow": True,
    "fields": ["age", "phone"],
    "withheld": [
        {"field": "immigration_status", "rules": ["R10"]},
        {"field": "notes", "rules": ["R7"]},
    ],
    "field_basis": {"age": "consent", "phone": "mandated_reporting"},
    "basis": ["consent", "mandated_reporting"],
    "reasons": ["R10", "R2", "R5", "R7"],
    "consents": [{"id": "c-2", "version": 3}],
    "obligations": [{"kind": "redisclosure_notice", "rule": "R10", "fields": ["age", "phone"]}],
    "review_required": False,
    "flags": [],
    "policy_revision": "r1",
    "valid_until": None,
    "field_reasons": {"age": ["R2"], "phone": ["R5"]},
    "field_consents": {"age": [{"id": "c-2", "version": 3}]},
}


def test_a_plan_restricted_to_some_fields_keeps_what_those_fields_rest_on() -> None:
    assert reuse.restrict(PLAN, ["age"]) == {
        **{k: v for k, v in PLAN.items() if k not in reuse.PLAN_PARTS},
        "fields": ["age"],
        "withheld": [],
        "field_basis": {"age": "consent"},
        "basis": ["consent"],
        "reasons": ["R2"],
        "consents": [{"id": "c-2", "version": 3}],
        "obligations": [{"kind": "redisclosure_notice", "rule": "R10", "fields": ["age"]}],
    }
    withheld = reuse.restrict(PLAN, ["notes"])
    assert withheld is not None and not withheld["allow"] and withheld["reasons"] == ["R7"]
    assert withheld["obligations"] == [] and withheld["consents"] == []
    assert reuse.restrict(PLAN, ["age", "phone", "immigration_status", "notes"]) == {
        k: v for k, v in PLAN.items() if k not in reuse.PLAN_PARTS
    }


def test_a_plan_serves_no_event_with_a_field_it_does_not_decide_or_without_fields() -> None:
    assert reuse.restrict(PLAN, ["age", "email"]) is None
    assert reuse.restrict(PLAN, []) is None
    assert reuse.restrict({k: v for k, v in PLAN.items() if k != "field_reasons"}, ["age"]) is None


class CountingPolicy:
    """Answers like the policy would for these inputs and counts what it was asked."""

    def __init__(self, revision: str = "r1", until: int | None = None) -> None:
        self.asked: list[dict[str, Any]] = []
        self.revision = revision
        self.until = until

    async def decide(self, items: Sequence[dict[str, Any]]) -> list[Any]:
        out = []
        for item in items:
            if item:
                self.asked.append(item)
            allowed = item.get("consents", [{}])[0].get("status") == "active" if item else False
            out.append({
                "allow": allowed, "fields": ["age"] if allowed else [], "withheld": [],
                "consents": [{"id": "c-1", "version": item["consents"][0]["version"]}]
                if allowed else [],
                "policy_revision": self.revision, "valid_until": self.until,
            })  # fmt: skip
        return out

    async def plan(self, items: Sequence[dict[str, Any]]) -> list[Any]:
        """A plan for the item's fields: all released on consent if allowed, else withheld."""
        out = []
        for item, raw in zip(items, await self.decide(items), strict=True):
            names = item["event"]["fields"] if item else []
            allowed = raw["allow"]
            out.append({
                **raw, "fields": names if allowed else [],
                "field_basis": {f: "consent" for f in names} if allowed else {},
                "withheld": [] if allowed else [{"field": f, "rules": ["R2"]} for f in names],
                "basis": ["consent"] if allowed else [], "reasons": ["R2"],
                "obligations": [], "flags": [], "review_required": False,
                "field_reasons": {f: ["R2"] for f in names} if allowed else {},
                "field_consents": {f: raw["consents"] for f in names} if allowed else {},
            })  # fmt: skip
        return out


def recipient(pid: str) -> Recipient:
    return Recipient(pid, "shelter", "service_referral", "state-a", "active", True, False, None)


def event(n: int) -> InboundEvent:
    return InboundEvent(f"evt-{n}", "accord.referral.made", "agency-a", "sv-1", T0, {"age": 24})


def inputs_for(pairs: list[tuple[InboundEvent, Recipient]], version: int, status: str) -> list[Any]:
    out = []
    for e, r in pairs:
        item = copy.deepcopy(ITEM)
        item["event"].update(id=e.id, fields=sorted(e.data))
        item["partner"]["id"] = r.partner_id
        item["consents"][0].update(version=version, status=status)
        out.append(item)
    return out


def questions(pairs: list[tuple[InboundEvent, Recipient]], items: list[Any]) -> list[Question]:
    return [(e, r, i) for (e, r), i in zip(pairs, items, strict=True)]


def test_decide_asks_each_distinct_key_once_then_reuses_until_a_new_version() -> None:
    store: reuse.ReuseStore[Planned] = reuse.ReuseStore(100)
    policy = CountingPolicy()
    pairs = [(event(n), r) for n in range(5) for r in (recipient("p-1"), recipient("p-2"))]

    def run(version: int, status: str, now: datetime) -> list[Decision]:
        got = asyncio.run(
            decide_all(
                policy, questions(pairs, inputs_for(pairs, version, status)), reuse=store, now=now
            )
        )
        return [j.decision for j in got]

    first = run(1, "active", T0)
    assert len(policy.asked) == 2  # one per recipient: the 5 events share their keys
    assert all(d.allow and d.consents == (("c-1", 1),) for d in first)
    again = run(1, "active", T0 + timedelta(hours=1))
    assert len(policy.asked) == 2 and again == first  # all reused
    revoked = run(2, "revoked", T0 + timedelta(hours=1))
    assert len(policy.asked) == 4  # a new version: asked again
    assert not any(d.allow for d in revoked)


def test_a_new_policy_revision_or_an_expired_entry_is_asked_again() -> None:
    store: reuse.ReuseStore[Planned] = reuse.ReuseStore(100)
    until = reuse.ns(T0 + timedelta(minutes=1))
    policy = CountingPolicy(until=until)
    pairs = [(event(0), recipient("p-1"))]
    items = inputs_for(pairs, 1, "active")
    asyncio.run(decide_all(policy, questions(pairs, items), reuse=store, now=T0))
    asyncio.run(
        decide_all(policy, questions(pairs, items), reuse=store, now=T0 + timedelta(seconds=59))
    )
    assert len(policy.asked) == 1
    asyncio.run(
        decide_all(policy, questions(pairs, items), reuse=store, now=T0 + timedelta(minutes=1))
    )
    assert len(policy.asked) == 2  # valid_until reached
    policy.revision = "r2"
    got = asyncio.run(decide_all(policy, questions(pairs, items), reuse=store, now=T0))
    assert len(policy.asked) == 3 and got[0].decision.policy_revision == "r2"


def test_without_a_store_every_pair_is_asked() -> None:
    policy = CountingPolicy()
    pairs = [(event(n), recipient("p-1")) for n in range(3)]
    asyncio.run(decide_all(policy, questions(pairs, inputs_for(pairs, 1, "active"))))
    assert len(policy.asked) == 3
