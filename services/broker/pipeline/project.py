"""Stage 4, project: keep only the fields the decision released; everything else is dropped
here. What an allowed partner receives is a CloudEvent with only the released fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from services.broker.pipeline.model import JSON, Decision, InboundEvent, Judged, PollItem, rfc3339


def project(event: InboundEvent, decision: Decision) -> JSON:
    if not decision.allow:
        return {}
    released = set(decision.fields)
    return {name: value for name, value in event.data.items() if name in released}


def delivery_payload(judged: Judged) -> JSON:
    """What the partner receives: a CloudEvent with only the released fields."""
    event, d = judged.event, judged.decision
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": f"/agencies/{event.agency_id}",
        "type": event.type,
        "subject": event.survivor_id,
        "time": rfc3339(event.time),
        "datacontenttype": "application/json",
        "data": project(event, d),
        "accordpurpose": judged.recipient.purpose,
        "accordbasis": list(d.basis),
        "accordobligations": list(d.obligations),
        "accordpolicyrevision": d.policy_revision,
    }


def projected(judged: Judged) -> Judged:
    """The pair with its ``payload`` if the decision allows; a denied pair gets none."""
    return replace(judged, payload=delivery_payload(judged)) if judged.decision.allow else judged


def project_all(items: Sequence[PollItem]) -> list[PollItem]:
    """The poll's items, each allowed pair with what its partner receives."""
    return [replace(item, judged=tuple(map(projected, item.judged))) for item in items]
