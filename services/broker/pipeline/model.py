"""Values that travel through the relay's stages: unseal → validate → decide → project →
seal → deliver.

A poll is one list of ``PollItem``, one per inbound record, in the order of the poll; each
stage takes that list and returns it with its own part filled in. All frozen; stages return
values (a delivery, a dead letter) rather than raise. Exceptions are for infrastructure
faults (OPA, a view or Kafka unreachable: ``services.unavailable``), which hold the whole poll.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JSON = dict[str, Any]


def rfc3339(value: datetime) -> str:
    """A UTC time as the records, deliveries and policy input write it (``...Z``)."""
    return value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SurvivorFacts:
    """What the policy reads about a survivor besides the event, as one value so that no
    caller of ``build_input`` can leave part of it out: consents, imminent-danger
    declarations (R8) and court orders (R9)."""

    consents: tuple[JSON, ...] = ()
    declarations: tuple[JSON, ...] = ()
    court_orders: tuple[JSON, ...] = ()

    @classmethod
    def of(cls, snapshot: Mapping[str, Any]) -> SurvivorFacts:
        """From a consent snapshot document (services/snapshot/publisher.py); missing lists
        are empty."""
        return cls(
            tuple(snapshot.get("consents") or ()),
            tuple(snapshot.get("declarations") or ()),
            tuple(snapshot.get("court_orders") or ()),
        )


@dataclass(frozen=True)
class Unsealed:
    """An opened record: the event's bytes, and who the seal says it is from and about."""

    event: bytes
    sealed_for: tuple[str, str] | None  # (agency, survivor); None for a plaintext record


@dataclass(frozen=True)
class InboundEvent:
    """A validated CloudEvent about one survivor, published by one agency."""

    id: str
    type: str
    agency_id: str
    survivor_id: str
    time: datetime
    data: JSON
    survivor_age: int | None = None


@dataclass(frozen=True)
class Rejection:
    """Why an inbound record cannot be relayed; goes to the dead-letter topic, never its payload."""

    code: str
    detail: str
    event_id: str | None = None
    agency_id: str | None = None


@dataclass(frozen=True)
class Agreement:
    id: str
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime


@dataclass(frozen=True)
class Recipient:
    """One subscribed partner and the purpose of its subscription."""

    partner_id: str
    partner_type: str
    purpose: str
    jurisdiction: str
    status: str
    vetted: bool
    immigration_enforcement: bool
    training_attested_until: datetime | None
    agreements: tuple[Agreement, ...] = ()
    public_key: str = ""  # what deliveries are sealed to


@dataclass(frozen=True)
class Withheld:
    field: str
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """OPA's answer for one event × partner (see policies/README.md)."""

    allow: bool
    fields: tuple[str, ...]
    withheld: tuple[Withheld, ...]
    basis: tuple[str, ...]
    reasons: tuple[str, ...]
    consents: tuple[tuple[str, int], ...]
    obligations: tuple[JSON, ...]
    review_required: bool
    policy_revision: str
    field_basis: dict[str, str] = field(default_factory=dict)
    # What a reviewer should know: "age_unknown" (R5, policies/README.md).
    flags: tuple[str, ...] = ()

    @classmethod
    def deny(cls, *, fields: list[str], rule: str, revision: str = "unknown") -> Decision:
        return cls(
            allow=False,
            fields=(),
            withheld=tuple(Withheld(f, (rule,)) for f in sorted(fields)),
            basis=(),
            reasons=(rule,),
            consents=(),
            obligations=(),
            review_required=False,
            policy_revision=revision,
        )


@dataclass(frozen=True)
class Judged:
    """An event, one recipient, and the decision about it (stage 3); then, if the decision
    allows, what the partner receives (stage 4, project) and that sealed for it (stage 5)."""

    event: InboundEvent
    recipient: Recipient
    decision: Decision
    payload: JSON | None = None
    sealed: bytes | None = None


@dataclass(frozen=True)
class OutRecord:
    """One Kafka record the relay writes inside its transaction."""

    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class PollItem:
    """One inbound record of a poll and what the stages have made of it so far.

    Exactly one of ``rejection`` (dead-lettered, from stage 1 or 2) and ``event`` (stage 2)
    is set once the record is validated; the later stages pass rejected items through."""

    topic: str
    partition: int
    offset: int
    record: bytes
    opened: Unsealed | None = None  # stage 1, unseal
    rejection: Rejection | None = None  # stage 1 or 2: why it goes to the dead letters
    event: InboundEvent | None = None  # stage 2, validate
    judged: tuple[Judged, ...] = ()  # stage 3, decide: one per recipient (then 4 and 5)
    records: tuple[OutRecord, ...] = ()  # stage 6, deliver: what its transaction writes
