"""Stage 3, decide: ask the policy what each recipient may receive of each event.

``decide`` is the stage: the poll's questions (``questions``: one policy input per event ×
subscribed partner, built by ``build_input``, the one function that builds it, for the relay
and the consent preview alike), asked of a ``Policy``, answered as one ``Judged`` per pair.
``build_input`` and ``parse_decision`` are pure; the policy (``OpaPolicy``, or ``WasmPolicy``
in decide_wasm.py) is the only I/O. One HTTP call carries a whole batch of event × partner
pairs (rule ``data.accord.decision.batch``).

Fail closed (R1): if OPA cannot be reached, answers late or with an error status,
``PolicyUnavailable`` is raised and the relay delivers nothing of the batch and retries it later.
If OPA answers but an item's decision is missing or malformed, that item is denied.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
from opa_client import AsyncOpaClient

from services.broker.pipeline.model import (
    JSON,
    Decision,
    InboundEvent,
    Judged,
    PollItem,
    Recipient,
    SurvivorFacts,
    Withheld,
    rfc3339,
)
from services.broker.pipeline.reuse import (
    EVENT_SIDE,
    PARTNER_SIDE,
    Key,
    ReuseStore,
    ns,
    restrict,
    side_digest,
    valid_until,
)
from services.observability.metrics import OPA_FAILOVERS, OPA_REQUEST_SECONDS
from services.unavailable import Unavailable

POLICY_PACKAGE = "accord/decision"
BATCH_RULE = "batch"
PLANS_RULE = "plans"


class PolicyUnavailable(Unavailable):
    """OPA could not give decisions now; nothing may be delivered until it can."""

    cause = "opa_unavailable"


class Policy(Protocol):
    async def decide(self, items: Sequence[JSON]) -> list[Any]:
        """Raw decisions, one per input item, in order."""
        ...


@runtime_checkable
class Planner(Policy, Protocol):
    async def plan(self, items: Sequence[JSON]) -> list[Any]:
        """Raw plans (rule ``data.accord.decision.plans``), one per input item, in order."""
        ...


class Audience(Protocol):
    """Who receives an event type, as the relay's registry snapshot says for one poll."""

    @property
    def jurisdictions(self) -> Mapping[str, str]:
        """Agency id → its jurisdiction."""
        ...

    def recipients(
        self,
        event_type: str,
        *,
        publisher: str,
        event_id: str | None = None,
        survivor_id: str | None = None,
    ) -> Sequence[Recipient]:
        """The partners subscribed to the type (not its publisher); for an event addressed to
        one partner (a referral's payload), that partner alone."""
        ...


Question = tuple[InboundEvent, Recipient, JSON]  # an event, a recipient, the policy input


class Ask:
    """A question whose policy input is built when first read (``build_input``): with reuse,
    only an event's first question and each recipient's first, and the misses, are built."""

    __slots__ = ("_build", "_item", "event", "recipient")

    def __init__(self, event: InboundEvent, recipient: Recipient, build: Callable[[], JSON]):
        self.event = event
        self.recipient = recipient
        self._build = build
        self._item: JSON | None = None

    @classmethod
    def of(cls, question: Question | Ask) -> Ask:
        if isinstance(question, Ask):
            return question
        event, recipient, item = question
        ask = cls(event, recipient, lambda: item)
        ask._item = item
        return ask

    @property
    def item(self) -> JSON:
        if self._item is None:
            self._item = self._build()
        return self._item


@dataclass
class Planned:
    """A plan in the reuse store, with the decisions already restricted from it by the
    event's field names (at most ``SHAPES_KEPT`` field sets)."""

    plan: JSON
    decisions: dict[tuple[str, ...], Decision] = field(default_factory=dict)


SHAPES_KEPT = 16
# Equal plans are kept once (the same partner and age class without consent share theirs):
# a plan is some 17 kB as Python objects, and the store holds thousands.
_PLANS: weakref.WeakValueDictionary[str, Planned] = weakref.WeakValueDictionary()


def _planned(plan: Mapping[str, Any]) -> Planned:
    text = json.dumps(plan, sort_keys=True, separators=(",", ":"))
    held = _PLANS.get(text)
    if held is None:
        held = _PLANS[text] = Planned(dict(plan))
    return held


def _from_plan(planned: Planned, event: InboundEvent, names: list[str]) -> Decision | None:
    shape = tuple(names)
    decision = planned.decisions.get(shape)
    if decision is None:
        raw = restrict(planned.plan, names)
        if raw is None:
            return None
        decision = parse_decision(raw, event_fields=list(event.data))
        if len(planned.decisions) < SHAPES_KEPT:
            planned.decisions[shape] = decision
    return decision


def _ts(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def build_input(
    event: InboundEvent,
    recipient: Recipient,
    *,
    jurisdiction: str,
    facts: SurvivorFacts,
    now: datetime,
) -> JSON:
    """The policy input for one event × partner, for the relay and the consent preview alike.
    Field names only: values never go to OPA."""
    return {
        "now": _ts(now),
        "purpose": recipient.purpose,
        "event": {
            "id": event.id,
            "type": event.type,
            "time": _ts(event.time),
            "agency": {"id": event.agency_id, "jurisdiction": jurisdiction},
            "survivor": {"id": event.survivor_id, "age": event.survivor_age},
            "fields": sorted(event.data),
        },
        "partner": {
            "id": recipient.partner_id,
            "type": recipient.partner_type,
            "jurisdiction": recipient.jurisdiction,
            "status": recipient.status,
            "vetted": recipient.vetted,
            "immigration_enforcement": recipient.immigration_enforcement,
            "agreements": [
                {
                    "id": a.id,
                    "purposes": list(a.purposes),
                    "categories": list(a.categories),
                    "valid_from": _ts(a.valid_from),
                    "valid_until": _ts(a.valid_until),
                }
                for a in recipient.agreements
            ],
            "training_attested_until": _ts(recipient.training_attested_until),
        },
        "consents": list(facts.consents),
        "declarations": list(facts.declarations),
        "court_orders": list(facts.court_orders),
    }


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def parse_decision(raw: Any, *, event_fields: Sequence[str]) -> Decision:
    """Turn OPA's JSON into a Decision; anything unexpected denies every field (R1)."""
    try:
        if not isinstance(raw, Mapping):
            raise ValueError("decision is not an object")
        allow = raw["allow"]
        if not isinstance(allow, bool):
            raise ValueError("allow is not a boolean")
        fields = _strings(raw.get("fields", []))
        if not allow and fields:
            raise ValueError("fields released without allow")
        unknown = set(fields) - set(event_fields)
        if unknown:
            raise ValueError("policy released fields the event does not have")
        withheld = tuple(
            Withheld(str(w["field"]), _strings(w.get("rules", []))) for w in raw.get("withheld", [])
        )
        consents = tuple((str(c["id"]), int(c["version"])) for c in raw.get("consents", []))
        return Decision(
            allow=allow,
            fields=fields,
            withheld=withheld,
            basis=_strings(raw.get("basis", [])),
            reasons=_strings(raw.get("reasons", [])),
            consents=consents,
            obligations=tuple(dict(o) for o in raw.get("obligations", [])),
            review_required=bool(raw.get("review_required", False)),
            policy_revision=str(raw.get("policy_revision", "unknown")),
            field_basis={str(k): str(v) for k, v in dict(raw.get("field_basis", {})).items()},
            flags=_strings(raw.get("flags", [])),
        )
    except (KeyError, TypeError, ValueError):
        return Decision.deny(fields=list(event_fields), rule="R1")


class OpaPolicy:
    """The OPA server's REST API through opa-python-client, with a bounded timeout."""

    def __init__(self, base_url: str, *, timeout_s: float) -> None:
        url = urlsplit(base_url)
        self._client = AsyncOpaClient(
            host=url.hostname or "127.0.0.1",
            port=url.port or 8181,
            ssl=url.scheme == "https",
            timeout=timeout_s,
            retries=0,  # the relay owns retries, with backoff, for the whole batch
        )
        self._timeout_s = timeout_s

    async def __aenter__(self) -> OpaPolicy:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(None, None, None)

    async def decide(self, items: Sequence[JSON]) -> list[Any]:
        return await self._query(items, BATCH_RULE)

    async def plan(self, items: Sequence[JSON]) -> list[Any]:
        return await self._query(items, PLANS_RULE)

    async def _query(self, items: Sequence[JSON], rule: str) -> list[Any]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await self._client.query_rule({"items": list(items)}, POLICY_PACKAGE, rule)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            OPA_REQUEST_SECONDS.labels("unavailable").observe(time.perf_counter() - started)
            raise PolicyUnavailable(f"OPA unavailable: {type(exc).__name__}") from exc
        OPA_REQUEST_SECONDS.labels("ok").observe(time.perf_counter() - started)
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, list) or len(result) != len(items):
            # A missing or short result means the policy is broken: deny each item.
            return [None] * len(items)
        return result


class FailoverPolicy:
    """Several OPA servers serving the same policy, in order of preference: each request goes
    to the first one not resting; one that is unavailable rests for ``cooldown_s`` and the
    request goes to the next. Resting servers are still asked, last, so that a request fails
    (``PolicyUnavailable``: the relay holds the batch, R1) only if no server answers. A server
    that answers with a broken result is not skipped: that is the policy's answer (denied
    item by item), not an outage."""

    def __init__(
        self,
        servers: Sequence[Policy],
        *,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not servers:
            raise ValueError("at least one OPA server")
        self._servers = list(servers)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._resting_until = [0.0] * len(self._servers)

    def order(self) -> list[int]:
        """The servers' positions in the order the next request tries them."""
        now = self._clock()
        ready = [i for i, until in enumerate(self._resting_until) if until <= now]
        return ready + [i for i in range(len(self._servers)) if i not in ready]

    async def decide(self, items: Sequence[JSON]) -> list[Any]:
        return await self._first(items, plans=False)

    async def plan(self, items: Sequence[JSON]) -> list[Any]:
        return await self._first(items, plans=True)

    async def _first(self, items: Sequence[JSON], *, plans: bool) -> list[Any]:
        order = self.order()
        for n, i in enumerate(order):
            server = self._servers[i]
            try:
                if plans and isinstance(server, Planner):
                    answer = await server.plan(items)
                else:  # a server that cannot plan: its answers serve no plan (asked again)
                    answer = await server.decide(items)
            except PolicyUnavailable:
                self._resting_until[i] = self._clock() + self._cooldown_s
                if n + 1 == len(order):
                    raise
                OPA_FAILOVERS.labels(str(i)).inc()
                continue
            self._resting_until[i] = 0.0
            return answer
        raise AssertionError("unreachable: the last server's failure is raised")


def request_size(pairs: int, *, chunk: int, concurrency: int) -> int:
    """Pairs per OPA request: at most ``chunk``, and a small poll spread over the concurrent
    requests too, so OPA evaluates it on as many cores as requests in flight instead of one
    (a batch request is evaluated sequentially)."""
    return max(1, min(chunk, -(-pairs // concurrency)))


async def decide_all(
    policy: Policy,
    asked: Sequence[Question | Ask],
    *,
    chunk: int = 100,
    concurrency: int = 2,
    reuse: ReuseStore[Planned] | None = None,
    now: datetime | None = None,
) -> list[Judged]:
    """Ask every question (event, recipient, policy input), at most ``chunk`` per request,
    ``concurrency`` requests at a time.

    Chunks keep each request well inside the policy timeout however large the relay's batch,
    and let OPA evaluate on several cores; one unavailable chunk fails the whole batch. With
    ``reuse`` (and the poll's ``now``), decisions the store holds are not asked again.
    """
    asks = [Ask.of(q) for q in asked]
    if reuse is not None and now is not None and isinstance(policy, Planner):
        return await _decide_reusing(policy, asks, reuse, now, chunk=chunk, concurrency=concurrency)
    raw = await _ask(policy, [a.item for a in asks], chunk=chunk, concurrency=concurrency)
    return [
        Judged(a.event, a.recipient, parse_decision(answer, event_fields=list(a.event.data)))
        for a, answer in zip(asks, raw, strict=True)
    ]


async def _ask(
    policy: Policy,
    inputs: Sequence[JSON],
    *,
    chunk: int,
    concurrency: int,
    plans: bool = False,
) -> list[Any]:
    if not inputs:
        return []
    gate = asyncio.Semaphore(concurrency)

    async def ask(part: Sequence[JSON]) -> list[Any]:
        async with gate:
            if plans and isinstance(policy, Planner):
                return await policy.plan(part)
            return await policy.decide(part)

    size = request_size(len(inputs), chunk=chunk, concurrency=concurrency)
    parts = [inputs[i : i + size] for i in range(0, len(inputs), size)]
    return [answer for answers in await asyncio.gather(*map(ask, parts)) for answer in answers]


async def policy_revision(policy: Policy) -> str:
    """The revision the policy decides under now: that of its answer to an empty item (a
    refusal, R1, which names the revision like every decision)."""
    (answer,) = await policy.decide([{}])
    revision = answer.get("policy_revision") if isinstance(answer, Mapping) else None
    if not isinstance(revision, str):
        raise PolicyUnavailable("the policy did not name its revision")
    return revision


def _keys(asked: Sequence[Ask], revision: str) -> tuple[list[Key], list[list[str]]]:
    """Each question's reuse key and its event's field names: the event side of the key
    computed once per event and the partner side once per recipient (see _decide_reusing)."""
    by_event: dict[int, tuple[bytes, list[str]]] = {}
    by_recipient: dict[int, bytes] = {}
    keys: list[Key] = []
    fields: list[list[str]] = []
    for ask in asked:
        e = by_event.get(id(ask.event))
        if e is None:
            item = ask.item
            e = by_event[id(ask.event)] = (side_digest(item, EVENT_SIDE), item["event"]["fields"])
        p = by_recipient.get(id(ask.recipient))
        if p is None:
            p = by_recipient[id(ask.recipient)] = side_digest(ask.item, PARTNER_SIDE)
        keys.append((revision, e[0], p))
        fields.append(e[1])
    return keys, fields


async def _decide_reusing(
    policy: Planner,
    asked: Sequence[Ask],
    store: ReuseStore[Planned],
    now: datetime,
    *,
    chunk: int,
    concurrency: int,
) -> list[Judged]:
    """As ``decide_all``, from plans (``data.accord.decision.plans``: an input's decision for
    every field of its event type, restricted to each event's fields by ``reuse.restrict``):
    the store holds plans by the key of services/broker/pipeline/reuse.py (the input without
    its event's id, time and field names), and the policy is asked a plan only for the keys
    it does not hold at ``now``, or holds without one of the event's fields, each distinct
    key once; every fresh plan that names its ``valid_until`` is stored under the revision it
    names. An input no plan can serve (an event without fields) is asked as it is. Every
    input of the poll is built with this ``now``, from the same facts per event and the same
    registry entry per recipient: the key's two sides are computed once each (``_keys``)."""
    now_ns = ns(now)
    keys, fields = _keys(asked, await policy_revision(policy))
    decided: list[Decision | None] = [None] * len(asked)
    first: dict[Key, int] = {}  # one plan asked per distinct key
    for i, key in enumerate(keys):
        held = store.get(key, now_ns)
        if held is not None:
            decided[i] = _from_plan(held, asked[i].event, fields[i])
            if decided[i] is None:
                store.uncovered(key)
        if decided[i] is None:
            first.setdefault(key, i)
    once = list(first.values())
    store.stats.asked += len(once)
    plans = await _ask(
        policy, [asked[i].item for i in once], chunk=chunk, concurrency=concurrency, plans=True
    )
    fresh: dict[Key, Planned | None] = {}
    for i, plan in zip(once, plans, strict=True):
        planned = fresh[keys[i]] = _planned(plan) if isinstance(plan, Mapping) else None
        until = valid_until(plan)
        if until is not False and planned is not None:
            revised = (str(planned.plan.get("policy_revision")), keys[i][1], keys[i][2])
            store.put(revised, planned, decided_ns=now_ns, until=until)
    exact: list[int] = []  # no plan serves them: asked as they are
    for i, key in enumerate(keys):
        if decided[i] is None:
            planned = fresh[key]
            decided[i] = _from_plan(planned, asked[i].event, fields[i]) if planned else None
            if decided[i] is None:
                exact.append(i)
    store.stats.asked += len(exact)
    answers = await _ask(
        policy, [asked[i].item for i in exact], chunk=chunk, concurrency=concurrency
    )
    for i, answer in zip(exact, answers, strict=True):
        decided[i] = parse_decision(answer, event_fields=list(asked[i].event.data))
    return [
        Judged(ask.event, ask.recipient, d or Decision.deny(fields=list(ask.event.data), rule="R1"))
        for ask, d in zip(asked, decided, strict=True)
    ]


def questions(
    event: InboundEvent,
    *,
    audience: Audience,
    facts: Callable[[str], SurvivorFacts],
    now: datetime,
) -> list[Ask]:
    """One policy question per partner subscribed to the event (not its publisher), or for a
    referral's payload, its addressee alone."""
    survivor = facts(event.survivor_id)
    jurisdiction = audience.jurisdictions[event.agency_id]

    def asking(r: Recipient) -> Ask:
        return Ask(
            event,
            r,
            lambda: build_input(event, r, jurisdiction=jurisdiction, facts=survivor, now=now),
        )

    recipients = audience.recipients(
        event.type, publisher=event.agency_id, event_id=event.id, survivor_id=event.survivor_id
    )
    return [asking(r) for r in recipients]


async def decide(
    items: Sequence[PollItem],
    policy: Policy,
    *,
    audience: Audience,
    facts: Callable[[str], SurvivorFacts],
    now: datetime,
    chunk: int,
    concurrency: int,
    reuse: ReuseStore[Planned] | None = None,
) -> list[PollItem]:
    """The poll's items, each validated event with one ``Judged`` per recipient: one policy
    fan-out (``decide_all``) for the whole poll; with ``reuse``, only the store's misses are
    asked (each distinct key once)."""
    asked = [
        questions(item.event, audience=audience, facts=facts, now=now) if item.event else []
        for item in items
    ]
    flat = [q for qs in asked for q in qs]
    judged = iter(
        await decide_all(policy, flat, chunk=chunk, concurrency=concurrency, reuse=reuse, now=now)
    )
    return [
        replace(item, judged=tuple(itertools.islice(judged, len(qs))))
        for item, qs in zip(items, asked, strict=True)
    ]
