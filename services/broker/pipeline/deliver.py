"""Stage 6, deliver: the Kafka records of each poll item: its dead letter, or its replay-guard
marker, its sealed deliveries (stage 5) and one decision record per event (folded: every
partner's decision in it; ``split_decisions`` gives them back).

Pure: the relay loop writes a partition's records inside one transaction, together with the
consumed offsets, so a delivery never exists without its decision record and vice versa.
Decision records and dead letters carry field names and reason codes, never field values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import groupby

from services.broker.pipeline.model import (
    JSON,
    Decision,
    Judged,
    OutRecord,
    PollItem,
    Rejection,
    rfc3339,
)
from services.broker.pipeline.seal import delivery_id
from services.broker.pipeline.validate import event_key
from services.broker.replay import seen_record
from services.decision_records import folded_record


def _dumps(value: JSON) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def outcome(d: Decision) -> str:
    """``allow`` (every field released), ``partial`` (some withheld) or ``deny`` (nothing)."""
    return "deny" if not d.allow else ("partial" if d.withheld else "allow")


def decision_record(judged: Judged, *, decided_at: datetime) -> JSON:
    e, r, d = judged.event, judged.recipient, judged.decision
    return {
        "event_id": e.id,
        "delivery_id": delivery_id(e.id, r.partner_id) if d.allow else None,
        "event_type": e.type,
        "agency_id": e.agency_id,
        "survivor_id": e.survivor_id,
        "partner_id": r.partner_id,
        "partner_type": r.partner_type,
        "purpose": r.purpose,
        "outcome": outcome(d),
        "released": list(d.fields),
        "withheld": [{"field": w.field, "rules": list(w.rules)} for w in d.withheld],
        "field_basis": d.field_basis,
        "basis": list(d.basis),
        "reasons": list(d.reasons),
        "consents": [{"id": cid, "version": ver} for cid, ver in d.consents],
        "obligations": list(d.obligations),
        "review_required": d.review_required,
        "flags": list(d.flags),
        "policy_revision": d.policy_revision,
        "decided_at": rfc3339(decided_at),
    }


def dead_letter(rejection: Rejection, *, topic: str, partition: int, offset: int) -> JSON:
    return {
        "code": rejection.code,
        "detail": rejection.detail,
        "event_id": rejection.event_id,
        "agency_id": rejection.agency_id,
        "inbound": {"topic": topic, "partition": partition, "offset": offset},
    }


def records(
    judged: Iterable[Judged],
    *,
    decided_at: datetime,
    decisions_topic: str,
    partner_topic_prefix: str,
) -> list[OutRecord]:
    """The sealed delivery of every allowed pair, and one decision record per event naming
    every partner's decision (``judged`` holds each event's pairs one after another)."""
    out: list[OutRecord] = []
    for _, pairs in groupby(judged, key=lambda j: j.event.id):
        mine = list(pairs)
        event = mine[0].event
        key = event.survivor_id.encode()
        for j in mine:
            if j.sealed is not None:
                out.append(OutRecord(partner_topic_prefix + j.recipient.partner_id, key, j.sealed))
        docs = [decision_record(j, decided_at=decided_at) for j in mine]
        out.append(OutRecord(decisions_topic, key, _dumps(folded_record(event.id, docs))))
    return out


@dataclass(frozen=True)
class Topics:
    """Where the relay writes, besides the partner topics."""

    decisions: str
    deadletter: str
    seen: str
    partner_prefix: str


def item_records(item: PollItem, *, topics: Topics, decided_at: datetime) -> tuple[OutRecord, ...]:
    """A rejected record's dead letter; else the event's replay-guard marker, then the
    records of its pairs."""
    if item.rejection is not None:
        return (
            dead_letter_record(
                item.rejection,
                deadletter_topic=topics.deadletter,
                topic=item.topic,
                partition=item.partition,
                offset=item.offset,
            ),
        )
    assert item.event is not None  # validated: stage 2 sets one of the two
    key = event_key(item.event.agency_id, item.event.id)
    marker = OutRecord(topics.seen, *seen_record(key, item.event.time))
    pairs = records(
        item.judged,
        decided_at=decided_at,
        decisions_topic=topics.decisions,
        partner_topic_prefix=topics.partner_prefix,
    )
    return (marker, *pairs)


def deliver(items: Sequence[PollItem], *, topics: Topics, decided_at: datetime) -> list[PollItem]:
    """The poll's items, each with the records its partition's transaction writes for it."""
    return [
        replace(item, records=item_records(item, topics=topics, decided_at=decided_at))
        for item in items
    ]


def dead_letter_record(
    rejection: Rejection, *, deadletter_topic: str, topic: str, partition: int, offset: int
) -> OutRecord:
    key = (rejection.agency_id or "unknown").encode()
    return OutRecord(
        deadletter_topic,
        key,
        _dumps(dead_letter(rejection, topic=topic, partition=partition, offset=offset)),
    )
