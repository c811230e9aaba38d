"""Revocation stays effective at the acknowledgement, with decision reuse (issue 16).

On the session's real relay (reuse enabled, as ``accord relay`` runs it): a survivor's
consent permits the shelter; a stream of identical referrals is published, so the relay
decides the first and reuses that decision for the rest (the log says so; the first half of
the stream is decided before the revocation, the rest races with it). In the middle of
the stream the consent is revoked (a new version, acknowledged by Kafka as the consent API's
publish is); every event published after the acknowledgement is decided under the revoked
version: nothing reaches the shelter, and no decision names the old version.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import AsyncExitStack
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.decision_records import split_decisions
from services.kafka import client as kafka_client
from services.kafka.client import AUDIT, kafka
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.events import cloudevent, consent_change, inbound_record, sealer
from tests.support.keys import opener
from tests.support.registry import permit

pytestmark = pytest.mark.integration

SHELTER = "lighthouse-shelter"
PARTNERS = ["lighthouse-shelter", "metro-police", "northside-clinic"]  # subscribed to referrals
REFERRAL = {"survivor_name": "R. Example", "age": 31, "service_needs": ["housing"]}
BEFORE, AFTER = 12, 12


async def test_no_reused_decision_outlives_a_revocation(
    settings: Settings,
    producer: AIOKafkaProducer,
    relay: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    survivor = f"sv-revoke-{uuid.uuid4().hex[:8]}"
    consent_id = f"c-{survivor}"
    shelter_permit = permit(["shelter"], ["service_referral"], ["*"])
    await producer.send_and_wait(
        settings.topic_consents,
        consent_change(settings, survivor, shelter_permit, version=1),
        key=survivor.encode(),
    )
    before = [cloudevent("harbor-outreach", survivor, REFERRAL) for _ in range(BEFORE)]
    after = [cloudevent("harbor-outreach", survivor, REFERRAL) for _ in range(AFTER)]
    caplog.set_level(logging.INFO, logger="accord.relay")
    async with AsyncExitStack() as stack:
        decided = await stack.enter_async_context(
            tail(kafka(settings, AUDIT), settings.topic_decisions)
        )
        shelter = await stack.enter_async_context(
            tail(kafka(settings, kafka_client.partner(SHELTER)), settings.partner_topic(SHELTER))
        )

        async def publish(event: dict[str, Any]) -> None:
            await producer.send_and_wait(
                settings.topic_inbound,
                inbound_record(settings, event),
                key=survivor.encode(),
            )

        await publish(before[0])  # decided (and stored) before the rest arrive
        await collect(decided, until=len(PARTNERS), timeout_s=30, split=split_decisions)
        # The next few are decided before the revocation is published (decisions reused under
        # version 1: the store is in play); how soon a poll takes the rest is a race with it.
        decided_first = before[1 : 1 + BEFORE // 2]
        for event in decided_first:
            await publish(event)
        early = await collect(
            decided, until=len(decided_first) * len(PARTNERS), timeout_s=30, split=split_decisions
        )
        for event in before[1 + BEFORE // 2 :]:
            await publish(event)
        # Revoked mid-stream: the events just above may be decided either way; the ones below
        # are published after the acknowledgement.
        revoked = revoked_snapshot(settings, survivor, shelter_permit)
        await producer.send_and_wait(settings.topic_consents, revoked, key=survivor.encode())
        for event in after:
            await publish(event)
        records = early + await collect(
            decided,
            until=(BEFORE + AFTER - 1 - len(decided_first)) * len(PARTNERS),
            timeout_s=60,
            settle_s=1,
            split=split_decisions,
        )
        delivered = await collect(
            shelter, until=0, timeout_s=2, settle_s=0.5, opener=opener(SHELTER)
        )
    mine = {r["event_id"]: r for r in records if r["partner_id"] == SHELTER}
    after_ids = {e["id"] for e in after}
    for event_id in after_ids:
        d = mine[event_id]
        assert d["outcome"] == "deny", "a decision under the revoked consent released fields"
        assert {"id": consent_id, "version": 1} not in d["consents"]
    assert not [d for d in delivered if d["id"] in after_ids]
    # Before the revocation the shelter did receive the referrals, under version 1 ...
    released = [mine[e["id"]] for e in before[1:] if mine[e["id"]]["outcome"] != "deny"]
    assert released and all(d["consents"] == [{"id": consent_id, "version": 1}] for d in released)
    # ... and the relay reused decisions (not vacuous: the store was in play).
    hits = [getattr(r, "hits", 0) for r in caplog.records if r.getMessage() == "decisions reused"]
    assert hits and max(hits) > 0


def revoked_snapshot(settings: Settings, survivor: str, provision: dict[str, Any]) -> bytes:
    """The survivor's consent, version 2, revoked (as the consent API publishes a revocation)."""
    consents = [
        {
            "id": f"c-{survivor}",
            "version": 2,
            "status": "revoked",
            "recorded_by": {"role": "self"},
            "provisions": [provision],
        }
    ]
    payload = json.dumps({"survivor_id": survivor, "consents": consents}).encode()
    return sealer(settings).snapshot(payload, survivor_id=survivor)
