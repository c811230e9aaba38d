"""Differential property test of decision reuse against the real OPA server (issue 16).

Streams of events as the relay sees them: a survivor's state (consents, declarations, court
orders, age) from the policy differential's seeded generator, each event fanned out to a few
recipients (partner + purpose), and between events what changes in life: consents amended or
revoked (a new version), new consents, declarations made or ended, court orders, a birthday,
an agreement or a training attestation renewed or ended, another event type or field set,
another agency or jurisdiction. Each event's ``now`` is placed at, 1 ns before or 1 ns after a
time the stream's inputs compare (every consent period, agreement, training, declaration start,
end and lapse, order expiry), or in between, always moving forward.

OPA decides every one of the inputs (batched: the truth for that exact input). The store of
``services/broker/pipeline/reuse.py`` is then replayed over the stream as the relay uses it,
a miss answered by OPA's decision of that input: **every decision the store hands out equals
OPA's decision for the input it is handed out for**, field for field (valid_until included).

The mutation run (``mutants``) replays the same streams with one part of the key left out
(or the validity interval ignored): each such store hands out at least one wrong decision.

    python -m tests.integration.test_decision_reuse [--items 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import random
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services import policy_data
from services.broker.pipeline import reuse
from services.settings import REPO_ROOT, Settings
from tests.integration.test_policy_differential import NOW, Generator, ts

pytestmark = pytest.mark.integration

ITEMS = int(os.environ.get("ACCORD_REUSE_TEST_ITEMS", "100000"))
SEED = 16
BATCH = 500
HOUR_NS = 3600 * 10**9
NS = 10**9


def ns_ts(t_ns: int) -> str:
    """An RFC 3339 timestamp with nanoseconds (UTC)."""
    seconds, frac = divmod(t_ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d\d):(\d\d))"
)


def parse_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 timestamp (None if it is not one)."""
    m = RFC3339.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        return None
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    whole = calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0))
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        whole -= offset if m.group(9) == "+" else -offset
    return whole * NS + int((m.group(7) or "0").ljust(9, "0"))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def boundaries(item: dict[str, Any], hours: dict[str, int]) -> set[int]:
    """Every time of the item that the policy compares with now (as the Rego sees them)."""
    out: set[int] = set()

    def add(value: Any, plus: int = 0) -> None:
        t = parse_ns(value)
        if t is not None:
            out.add(t + plus)

    for consent in _list(item.get("consents")):
        for provision in _list(consent.get("provisions")) if isinstance(consent, dict) else []:
            period = provision.get("period") if isinstance(provision, dict) else None
            if isinstance(period, dict):
                add(period.get("start"))
                add(period.get("end"))
    partner = item.get("partner") or {}
    for agreement in _list(partner.get("agreements")):
        if isinstance(agreement, dict):
            add(agreement.get("valid_from"))
            add(agreement.get("valid_until"))
    add(partner.get("training_attested_until"))
    jurisdiction = item["event"]["agency"]["jurisdiction"]
    for d in _list(item.get("declarations")):
        if isinstance(d, dict):
            add(d.get("declared_at"))
            add(d.get("ended_at"))
            add(d.get("declared_at"), hours.get(jurisdiction, 24) * HOUR_NS)
    for o in _list(item.get("court_orders")):
        if isinstance(o, dict):
            add(o.get("expires_at"))
    return out


@dataclass
class Case:
    stream: int
    item: dict[str, Any]
    now_ns: int


class Streams:
    """Seeded streams of inputs with the changes between events described above."""

    def __init__(self, seed: int, policies: Path = REPO_ROOT / "policies") -> None:
        need = json.loads((policies / "accord" / "need_to_know" / "data.json").read_text())
        self.g = Generator(seed, policy_data.classification(policies), need)
        self.rng = random.Random(seed * 7919)
        jurisdictions = json.loads(
            (policies / "accord" / "jurisdictions" / "data.json").read_text()
        )
        default = jurisdictions["default"]["imminent_danger"]["hours"]
        self.hours = {
            j: (o.get("imminent_danger") or {}).get("hours", default)
            for j, o in jurisdictions["overrides"].items()
        }
        self.common_fields = ["age", "narrative", "phone", "safety_status", "survivor_name"]

    def _recipients(self, base: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
        """The base item's partner and purpose, the same partner for another purpose, and one
        or two other partners."""
        out = [(base["partner"], base["purpose"])]
        out.append(
            (
                base["partner"],
                self.rng.choice(
                    ["care_coordination", "investigation", "mandated_report", base["purpose"]]
                ),
            )
        )
        for _ in range(self.rng.choice([1, 2])):
            other = self.g.item(0)
            out.append((other["partner"], other["purpose"]))
        if self.rng.random() < 0.5:  # an emergency recipient, for declarations (R8)
            police = self.g.partner("law_enforcement", "emergency_response")
            police.update(status="active", vetted=True, jurisdiction="state-a")
            out.append((police, "emergency_response"))
        return out

    def _change(self, state: dict[str, Any], now_ns: int) -> None:
        """One thing that happens between two events of a survivor."""
        rng = self.rng
        kind = rng.randrange(10)
        near = ns_ts(now_ns + rng.choice([1, NS, HOUR_NS, 30 * 24 * HOUR_NS]))
        consents = [c for c in state["consents"] if isinstance(c, dict)]
        if kind <= 2 and consents:  # amend: a new version, provisions changed
            c = rng.choice(consents)
            c["version"] = c.get("version", 1) + 1 if isinstance(c.get("version"), int) else 2
            for p in c.get("provisions") or []:
                if isinstance(p, dict) and rng.random() < 0.6:
                    if rng.random() < 0.5:
                        p["categories"] = self.g.categories()
                    elif isinstance(p.get("period"), dict):
                        p["period"]["end"] = near
        elif kind == 3 and consents:  # revoke
            c = rng.choice(consents)
            c["status"] = "revoked"
            c["version"] = c.get("version", 1) + 1 if isinstance(c.get("version"), int) else 2
        elif kind == 4 and len(state["consents"]) < 6:  # a new consent
            partner = state["partners"][0][0]
            state["consents"].append(
                self.g.broad_consent(partner.get("type", "shelter"), state["partners"][0][1], [])
            )
        elif kind == 5:  # a declaration made, or one ended
            ds = [d for d in state["declarations"] if isinstance(d, dict)]
            if ds and rng.random() < 0.5:
                rng.choice(ds)["ended_at"] = near
            else:
                state["declarations"].append({
                    "id": f"d-{rng.randrange(99)}", "kind": "imminent_danger",
                    "agency": state["agency"], "declared_at": ns_ts(now_ns - rng.choice(
                        [0, HOUR_NS, 23 * HOUR_NS])), "ended_at": None,
                })  # fmt: skip
        elif kind == 6:  # a court order for one of the partners
            partner = rng.choice(state["partners"])[0]
            state["court_orders"].append({
                "id": f"o-{rng.randrange(99)}", "recipient": partner.get("id"),
                "fields": rng.sample(self.common_fields, 2), "expires_at": near,
            })  # fmt: skip
        elif kind == 7:  # a birthday (the age the agency reports)
            age = state["age"]
            state["age"] = (age + 1) if isinstance(age, int) else rng.choice([17, 18, None])
        elif kind == 8:  # the registry: an agreement or the training renewed or ended
            partner, _ = rng.choice(state["partners"])
            if rng.random() < 0.5 and partner.get("agreements"):
                a = rng.choice(partner["agreements"])
                if isinstance(a, dict):
                    a["valid_until"] = near
            else:
                partner["training_attested_until"] = near
        else:  # the event: another type, field set, agency or jurisdiction
            r = rng.random()
            if r < 0.4:
                state["type"] = rng.choice(self.g.types)
                state["fields"] = rng.choice([self.common_fields, self.g.fields(state["type"])])
            elif r < 0.7 and state["type"] in self.g.classification:
                state["fields"] = rng.choice([self.common_fields, self.g.fields(state["type"])])
            elif r < 0.9:
                state["agency"] = "agency-b" if state["agency"] == "agency-a" else "agency-a"
            else:
                state["jurisdiction"] = rng.choice(["state-a", "state-b"])

    def stream(self, s: int) -> Iterator[Case]:
        rng = self.rng
        base = self.g.item(s)
        if not isinstance(base.get("event"), dict) or not isinstance(
            base["event"].get("agency"), dict
        ):
            return
        survivor = base["event"].get("survivor")
        state: dict[str, Any] = {
            "consents": base.get("consents") if isinstance(base.get("consents"), list) else [],
            "declarations": base.get("declarations")
            if isinstance(base.get("declarations"), list)
            else [],
            "court_orders": base.get("court_orders")
            if isinstance(base.get("court_orders"), list)
            else [],
            "age": survivor.get("age") if isinstance(survivor, dict) else None,
            "type": base["event"]["type"],
            "fields": base["event"]["fields"],
            "agency": base["event"]["agency"].get("id", "agency-a"),
            "jurisdiction": base["event"]["agency"]["jurisdiction"],
            "partners": self._recipients(base),
        }
        events = rng.choice([1, 2, 3, 5, 8, 12, 20, 30, 40])
        now_ns = parse_ns(ts(NOW)) or 0
        for k in range(events):
            if k and rng.random() < 0.35:
                self._change(state, now_ns)
            frozen = json.loads(json.dumps(state))  # a copy: the state changes later
            items = [self._item(frozen, partner, purpose, s, k) for partner, purpose in
                     frozen["partners"]]  # fmt: skip
            if k:  # move forward: to (around) the next boundary, or a little
                ahead = sorted(
                    t for it in items for b in boundaries(it, self.hours)
                    for t in (b - 1, b, b + 1) if t > now_ns
                )  # fmt: skip
                # Mostly to a boundary of the coming month; seldom months ahead, to the next
                # one however far: as in life, where an agreement or a training runs for a
                # year and a survivor's events come days apart (a stream that ran past every
                # end, as it did before, decided nothing bounded after its first few events).
                near = [t for t in ahead if t <= now_ns + 31 * 24 * HOUR_NS]
                if near and rng.random() < 0.7:
                    now_ns = near[min(int(rng.expovariate(0.7)), len(near) - 1)]
                elif ahead and rng.random() < 0.15:
                    now_ns = ahead[min(int(rng.expovariate(0.7)), len(ahead) - 1)]
                else:
                    now_ns += rng.choice([1, NS, 60 * NS, HOUR_NS, 24 * HOUR_NS])
            for it in items:
                it["now"] = ns_ts(now_ns)
                yield Case(s, it, now_ns)

    def _item(
        self, state: dict[str, Any], partner: dict[str, Any], purpose: str, s: int, k: int
    ) -> dict[str, Any]:
        return {
            "now": "",
            "purpose": purpose,
            "event": {
                "id": f"evt-{s}-{k}",
                "type": state["type"],
                "time": ts(NOW - timedelta(minutes=k)),
                "agency": {"id": state["agency"], "jurisdiction": state["jurisdiction"]},
                "survivor": {"id": f"sv-{s}", "age": state["age"]},
                "fields": state["fields"],
            },
            "partner": partner,
            "consents": state["consents"],
            "declarations": state["declarations"],
            "court_orders": state["court_orders"],
        }  # fmt: skip

    def cases(self, n: int) -> list[Case]:
        out: list[Case] = []
        s = 0
        while len(out) < n:
            out.extend(self.stream(s))
            s += 1
        return out[:n]


def decide_all(client: httpx.Client, items: Sequence[Any], rule: str = "batch") -> list[Any]:
    """OPA's answers (``batch``: the decisions; ``plans``: the plans the relay restricts)."""
    out: list[Any] = []
    for start in range(0, len(items), BATCH):
        chunk = list(items[start : start + BATCH])
        answer = client.post(f"/v1/data/accord/decision/{rule}", json={"input": {"items": chunk}})
        answer.raise_for_status()
        results = answer.json()["result"]
        assert len(results) == len(chunk)
        out.extend(results)
    return out


@dataclass
class Replay:
    handed_out: int  # decisions restricted from a plan the store held, instead of asking
    planned: int  # decisions restricted from the plan OPA gave for the input itself
    wrong: int  # of either, those that differ from OPA's decision for that input
    first_wrong: int | None


def replay(
    cases: Sequence[Case],
    truth: Sequence[Any],
    plans: Sequence[Any],
    revision: str,
    *,
    omit: frozenset[str] = frozenset(),
    max_entries: int = 1_000_000,
) -> Replay:
    """The store as the relay uses it: a plan found under the input's key is restricted to
    the input's fields; on a miss (or a plan that does not cover them) OPA's plan for the
    input is stored and restricted; an input no plan can serve (no fields) is asked as it
    is. Every decision so made is compared with OPA's decision for that exact input."""
    store: reuse.ReuseStore[Any] = reuse.ReuseStore(max_entries, ignore_validity="now" in omit)
    check_cover = "fields" not in omit
    handed = planned = wrong = 0
    first: int | None = None
    for i, (case, answer, fresh) in enumerate(zip(cases, truth, plans, strict=True)):
        fields = case.item["event"].get("fields")
        fields = fields if isinstance(fields, list) else []
        key = reuse.reuse_key(case.item, revision, omit=omit)
        got = None
        held = store.get(key, case.now_ns)
        if held is not None:
            got = reuse.restrict(held, fields, check_cover=check_cover)
            if got is None:
                store.uncovered(key)
            else:
                handed += 1
        if got is None:
            until = reuse.valid_until(fresh)
            if until is not False:
                store.put(key, fresh, decided_ns=case.now_ns, until=until)
            got = reuse.restrict(fresh, fields)
            if got is None:
                continue  # asked as it is: OPA's decision, trivially equal
            planned += 1
        if got != answer:
            wrong += 1
            first = i if first is None else first
    return Replay(handed, planned, wrong, first)


def mutants(
    cases: Sequence[Case], truth: Sequence[Any], plans: Sequence[Any], revision: str
) -> list[tuple[str, Replay]]:
    rows = []
    for part in reuse.KEY_PARTS:
        if part == "policy_revision":
            # Every input here is decided under one revision: its part is shown by a store
            # filled under another revision (see test_a_new_policy_revision_is_never_served_old).
            continue
        rows.append((part, replay(cases, truth, plans, revision, omit=frozenset({part}))))
    return rows


@pytest.fixture(scope="module")
def opa(settings: Settings) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=settings.opa_base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def decided(opa: httpx.Client) -> Decided:
    cases = Streams(SEED).cases(ITEMS)
    truth = decide_all(opa, [c.item for c in cases])
    plans = decide_all(opa, [c.item for c in cases], "plans")
    revision = truth[0]["policy_revision"]
    return cases, truth, plans, revision


Decided = tuple[list[Case], list[Any], list[Any], str]


def test_every_reused_decision_is_opas_for_that_input(
    decided: Decided,
) -> None:
    cases, truth, plans, revision = decided
    assert len(cases) >= ITEMS
    r = replay(cases, truth, plans, revision)
    assert r.wrong == 0, (
        f"{r.wrong}/{r.handed_out + r.planned} restricted decisions differ, first #{r.first_wrong}"
    )
    # Not vacuous: the store answered much of the stream, and time and changes did matter
    # (a store that ignores them is wrong: test_leaving_any_part_out_of_the_key_is_caught).
    assert r.handed_out > 0.3 * len(cases)
    bounded = [a["valid_until"] for a in truth if isinstance(a.get("valid_until"), int)]
    assert len(bounded) > 0.5 * len(truth)


def test_leaving_any_part_out_of_the_key_is_caught(
    decided: Decided,
) -> None:
    cases, truth, plans, revision = decided
    survived = [part for part, r in mutants(cases, truth, plans, revision) if r.wrong == 0]
    assert not survived, f"a store without {survived} hands out no wrong decision"


def test_a_new_policy_revision_is_never_served_old(
    decided: Decided,
) -> None:
    """Filled under one revision, asked under another: nothing is handed out (without the
    revision in the key, everything would be)."""
    cases, _, plans, revision = decided
    for omit, expect_hits in ((frozenset(), False), (frozenset({"policy_revision"}), True)):
        store: reuse.ReuseStore[Any] = reuse.ReuseStore(100_000)
        for case, answer in zip(cases[:2000], plans[:2000], strict=True):
            until = reuse.valid_until(answer)
            if until is not False:
                key = reuse.reuse_key(case.item, revision, omit=omit)
                store.put(key, answer, decided_ns=case.now_ns, until=until)
        hits = sum(
            store.get(reuse.reuse_key(c.item, "another-revision", omit=omit), c.now_ns) is not None
            for c in cases[:2000]
        )
        assert (hits > 0) is expect_hits


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opa", default=Settings().opa_base_url)
    parser.add_argument("--items", type=int, default=ITEMS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cases = Streams(args.seed).cases(args.items)
    with httpx.Client(base_url=args.opa, timeout=120) as client:
        truth = decide_all(client, [c.item for c in cases])
        plans = decide_all(client, [c.item for c in cases], "plans")
    asked = time.perf_counter() - started
    revision = truth[0]["policy_revision"]
    full = replay(cases, truth, plans, revision)
    streams = len({c.stream for c in cases})
    print(f"{len(cases)} inputs in {streams} streams (seed {args.seed}), OPA in {asked:.0f} s")
    print(f"full key: {full.handed_out} reused ({full.handed_out / len(cases):.1%}), "
          f"{full.planned} from their own plan, {full.wrong} wrong")  # fmt: skip
    print("| left out of the key | reused | wrong | caught |")
    print("| --- | --- | --- | --- |")
    failed = full.wrong > 0
    for part, r in mutants(cases, truth, plans, revision):
        print(f"| {part} | {r.handed_out} | {r.wrong} | {'yes' if r.wrong else 'NO'} |")
        failed = failed or r.wrong == 0
    print("| policy_revision | (test_a_new_policy_revision_is_never_served_old) | | yes |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
