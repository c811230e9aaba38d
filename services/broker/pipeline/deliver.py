"""Stage 5: the Kafka records of one batch: sealed deliveries, decision records, dead letters.

Pure: the relay loop writes what this returns inside one transaction, together with the
consumed offsets, so a delivery never exists without its decision record and vice versa.
Decision records and dead letters carry field names and reason codes, never field values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from services.broker.pipeline.model import (
    JSON,
    Decision,
    InboundEvent,
    Judged,
    OutRecord,
    Rejection,
)
from services.broker.pipeline.project import project
from services.broker.pipeline.seal import Sealer, delivery_id


def _dumps(value: JSON) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def delivery_payload(event: InboundEvent, judged: Judged) -> JSON:
    """What the partner receives: a CloudEvent with only the released fields."""
    d = judged.decision
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": f"/agencies/{event.agency_id}",
        "type": event.type,
        "subject": event.survivor_id,
        "time": _ts(event.time),
        "datacontenttype": "application/json",
        "data": project(event, d),
        "accordpurpose": judged.recipient.purpose,
        "accordbasis": list(d.basis),
        "accordobligations": list(d.obligations),
        "accordpolicyrevision": d.policy_revision,
    }


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
        "decided_at": _ts(decided_at),
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
    sealer: Sealer,
) -> list[OutRecord]:
    """A sealed delivery for every allowed pair, and a decision record for every pair."""
    out: list[OutRecord] = []
    for j in judged:
        key = j.event.survivor_id.encode()
        if j.decision.allow:
            r = j.recipient
            sealed = sealer.seal(
                delivery_payload(j.event, j),
                partner_id=r.partner_id,
                partner_key=r.public_key,
                did=delivery_id(j.event.id, r.partner_id),
            )
            out.append(OutRecord(partner_topic_prefix + r.partner_id, key, sealed))
        out.append(
            OutRecord(decisions_topic, key, _dumps(decision_record(j, decided_at=decided_at)))
        )
    return out


def dead_letter_record(
    rejection: Rejection, *, deadletter_topic: str, topic: str, partition: int, offset: int
) -> OutRecord:
    key = (rejection.agency_id or "unknown").encode()
    return OutRecord(
        deadletter_topic,
        key,
        _dumps(dead_letter(rejection, topic=topic, partition=partition, offset=offset)),
    )
