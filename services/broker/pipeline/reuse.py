"""Decision reuse: decide once per sharing state, not once per event (issue 16).

A decision is a pure function of its input and the policy revision (R13). Of the input, only
the event's id and time and the decision time ``now`` vary from event to event; the policy
does not read the event id or time, and it reports itself how long its answer holds against
``now``: ``valid_until``, the first instant after ``now`` at which any time comparison it
makes could change (policies/accord/validity). So a decision made at ``t0`` for an input is
the decision for every input that differs only in event id, event time and a ``now`` in
``[t0, valid_until)``.

The reuse key is therefore everything else the input holds, named part by part
(``KEY_PARTS``), plus the policy revision. Consents enter with their whole content (ids,
versions, status, provisions), so an amendment or a revocation changes the key: a decision
under an old version is never found for an input that carries the new one. OPA remains the
only source of decisions: the store holds OPA's answers and nothing else.

Pure apart from the store's own state; the relay asks ``ReuseStore`` before the policy and
puts every fresh answer in it.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_ABSENT = "\x00absent"  # a key missing from the input (distinct from null)


def _at(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, Mapping) or key not in doc:
            return _ABSENT
        doc = doc[key]
    return doc


def _partner_itself(item: Mapping[str, Any]) -> Any:
    partner = item.get("partner", _ABSENT)
    if not isinstance(partner, Mapping):
        return partner
    return {k: v for k, v in partner.items() if k not in ("agreements", "training_attested_until")}


# What of an input a decision depends on, besides ``now`` (valid_until covers it), part by
# part. The event side (about the event and the survivor's state) is the same for every
# partner of an event; the partner side is the same for every event to that partner.
EVENT_SIDE: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "event_type": lambda item: _at(item, "event", "type"),
    "agency": lambda item: _at(item, "event", "agency", "id"),
    "jurisdiction": lambda item: _at(item, "event", "agency", "jurisdiction"),
    "age": lambda item: _at(item, "event", "survivor", "age"),
    "consents": lambda item: item.get("consents", _ABSENT),
    "declarations": lambda item: item.get("declarations", _ABSENT),
    "court_orders": lambda item: item.get("court_orders", _ABSENT),
}
PARTNER_SIDE: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "partner": _partner_itself,
    "agreements": lambda item: _at(item, "partner", "agreements"),
    "training": lambda item: _at(item, "partner", "training_attested_until"),
    "purpose": lambda item: item.get("purpose", _ABSENT),
}
KEY_PARTS: tuple[str, ...] = ("policy_revision", *EVENT_SIDE, *PARTNER_SIDE, "now", "fields")


def _digest(values: list[Any]) -> bytes:
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def side_digest(
    item: Mapping[str, Any],
    side: Mapping[str, Callable[[Mapping[str, Any]], Any]],
    *,
    omit: frozenset[str] = frozenset(),
) -> bytes:
    """A digest of one side of the key (``omit``: parts left out, for the mutation run only)."""
    return _digest([[name, None if name in omit else part(item)] for name, part in side.items()])


Key = tuple[str, bytes, bytes]


def reuse_key(item: Mapping[str, Any], revision: str, *, omit: frozenset[str] = frozenset()) -> Key:
    """The key of an input: the policy revision and both sides' digests."""
    return (
        "" if "policy_revision" in omit else revision,
        side_digest(item, EVENT_SIDE, omit=omit),
        side_digest(item, PARTNER_SIDE, omit=omit),
    )


def ns(t: datetime) -> int:
    """A timezone-aware time in nanoseconds since the epoch (as the policy's clock counts)."""
    return (int(t.timestamp()) * 10**9) + t.microsecond * 1000


PLAN_PARTS = ("field_reasons", "field_consents")
_LEGAL_REVIEW = frozenset({"imminent_danger", "court_order"})


def plan_fields(plan: Mapping[str, Any]) -> frozenset[str] | None:
    """The fields a plan decides (every field is either released or withheld), or None if
    the plan is not one (then it is not reused)."""
    try:
        released = plan["field_basis"]
        withheld = [w["field"] for w in plan["withheld"]]
        if not isinstance(released, Mapping) or not all(
            isinstance(plan[part], Mapping) for part in PLAN_PARTS
        ):
            return None
        return frozenset(released) | frozenset(withheld)
    except (KeyError, TypeError):
        return None


def restrict(
    plan: Mapping[str, Any], fields: Iterable[Any], *, check_cover: bool = True
) -> dict[str, Any] | None:
    """The plan (``data.accord.decision.plans``: the decision for every field of the event
    type, with what each released field rests on) restricted to an event's ``fields``: the
    decision the policy gives for the same input with exactly these fields. None if it
    cannot be: the plan does not decide every one of the fields, or there are none (a
    refusal names its rule even without fields), or they are not all strings.

    Every part of a decision is a union over its fields, each judged apart from the others
    (policies/accord/decision), so the restriction is by field: released and withheld
    entries kept for these fields, the rules, bases, consents and obligations of those
    kept; tests/integration/test_decision_reuse.py proves it equal to OPA's own answer."""
    wanted = list(fields)
    if not wanted or not all(isinstance(f, str) for f in wanted):
        return None
    covered = plan_fields(plan)
    names = frozenset(wanted)
    if covered is None or (check_cover and not names <= covered):  # False: mutation run only
        return None
    try:
        basis = {f: b for f, b in plan["field_basis"].items() if f in names}
        withheld = [w for w in plan["withheld"] if w["field"] in names]
        reasons: set[str] = {r for w in withheld for r in w["rules"]}
        relied: list[Any] = []
        on_consent = [f for f, b in basis.items() if b == "consent"]
        if on_consent:
            used = [c for f in on_consent for c in plan["field_consents"][f]]
            relied = [c for c in plan["consents"] if c in used]  # the plan's order: sorted
        for f in basis:
            reasons.update(plan["field_reasons"][f])
        obligations = []
        for o in plan["obligations"]:
            kept = [f for f in o["fields"] if f in names]
            if kept:
                obligations.append({**o, "fields": kept})
        bases = sorted(set(basis.values()))
        return {
            "allow": bool(basis),
            "fields": sorted(basis),
            "withheld": withheld,
            "field_basis": basis,
            "basis": bases,
            "reasons": sorted(reasons),
            "consents": relied,
            "obligations": obligations,
            "review_required": bool(_LEGAL_REVIEW & set(bases)) or "age_unknown" in plan["flags"],
            "flags": plan["flags"],
            "policy_revision": plan["policy_revision"],
            "valid_until": plan["valid_until"],
        }
    except (KeyError, TypeError, AttributeError):
        return None


def valid_until(raw: Any) -> int | bool | None:
    """The decision's ``valid_until`` (ns, or None for no end); False if the answer has none
    that can be trusted (then it is not reused)."""
    if not isinstance(raw, Mapping) or "valid_until" not in raw:
        return False
    value = raw["valid_until"]
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return False


@dataclass
class ReuseStats:
    hits: int = 0
    misses: int = 0
    expired: int = 0  # found, but ``now`` had reached its valid_until
    evicted: int = 0
    asked: int = 0  # inputs the policy was asked for (a plan per distinct missing key)

    @property
    def rate(self) -> float:
        asked = self.hits + self.misses
        return self.hits / asked if asked else 0.0


class ReuseStore(Generic[T]):
    """At most ``max_entries`` decisions, least recently used evicted first; each entry valid
    for a ``now`` in ``[decided_ns, valid_until)``."""

    def __init__(self, max_entries: int, *, ignore_validity: bool = False) -> None:
        self._max = max_entries
        self._entries: OrderedDict[Key, tuple[int, int | None, T]] = OrderedDict()
        self._ignore_validity = ignore_validity  # the mutation run only
        self.stats = ReuseStats()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, now_ns: int) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        since, until, value = entry
        expired = now_ns < since or (until is not None and now_ns >= until)
        if expired and not self._ignore_validity:
            del self._entries[key]
            self.stats.expired += 1
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return value

    def uncovered(self, key: Key) -> None:
        """What ``get`` found for ``key`` cannot serve (a plan without the event's fields):
        counted a miss, and dropped (a wider plan replaces it)."""
        if self._entries.pop(key, None) is not None:
            self.stats.hits -= 1
            self.stats.misses += 1

    def put(self, key: Key, value: T, *, decided_ns: int, until: int | None) -> None:
        if self._max <= 0 or (until is not None and until <= decided_ns):
            return
        self._entries[key] = (decided_ns, until, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self.stats.evicted += 1

    def clear(self) -> None:
        self._entries.clear()


def split(
    keys: Iterable[Key], store: ReuseStore[T], now_ns: int
) -> tuple[list[T | None], list[int]]:
    """What the store already holds for each key, and the positions it does not hold."""
    found = [store.get(k, now_ns) for k in keys]
    return found, [i for i, v in enumerate(found) if v is None]
