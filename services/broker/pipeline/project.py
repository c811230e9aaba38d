"""Stage 3: keep only the fields the decision released; everything else is dropped here."""

from __future__ import annotations

from services.broker.pipeline.model import JSON, Decision, InboundEvent


def project(event: InboundEvent, decision: Decision) -> JSON:
    if not decision.allow:
        return {}
    released = set(decision.fields)
    return {name: value for name, value in event.data.items() if name in released}
