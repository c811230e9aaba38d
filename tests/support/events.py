"""Inbound events and consent snapshots as agencies and the API publish them, and
``publish_and_collect``: one event through the running relay, its decisions and deliveries."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from services.broker.survivor_keys import EventSealer
from services.decision_records import split_decisions
from services.kafka import client as kafka_client
from services.kafka.client import AUDIT, kafka
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.keys import opener, sign

# A referral and the partners it goes to, for the audit and dashboard tests.
PARTNERS = ["lighthouse-shelter", "metro-police", "northside-clinic"]


REFERRAL = {
    "survivor_name": "Zephyrine Quillfeather",
    "age": 24,
    "phone": "+1-555-0100",
    "service_needs": ["housing"],
    "referral_reason": "needs safe housing",
    "hiv_status": "negative",
}


def cloudevent(agency: str, survivor: str, data: dict[str, Any], **over: Any) -> dict[str, Any]:
    doc = {
        "specversion": "1.0",
        "id": f"evt-{uuid.uuid4().hex[:12]}",
        "source": f"/agencies/{agency}",
        "type": "accord.referral.made",
        "subject": survivor,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }
    doc.update(over)
    return sign(doc)


def consent_change(
    settings: Settings, survivor: str, *provisions: dict[str, Any], version: int = 1
) -> bytes:
    """A consent snapshot as the API publishes it (sealed to the survivor)."""
    consents = [
        {
            "id": f"c-{survivor}",
            "version": version,
            "status": "active",
            "recorded_by": {"role": "self"},
            "provisions": list(provisions),
        }
    ]
    payload = json.dumps({"survivor_id": survivor, "consents": consents}).encode()
    return sealer(settings).snapshot(payload, survivor_id=survivor)


@dataclass
class Outcome:
    event: dict[str, Any]
    decisions: dict[str, dict[str, Any]]  # by partner
    deliveries: dict[str, list[dict[str, Any]]]  # by partner, only this event's


async def publish_and_collect(
    settings: Settings,
    producer: AIOKafkaProducer,
    event: dict[str, Any],
    partners: list[str],
    *,
    decisions: int | None = None,
) -> Outcome:
    """Publish one event and gather its decision records (one per subscribed partner: pass
    ``decisions`` when more partners are subscribed than watched) and what each partner got."""
    async with AsyncExitStack() as stack:
        decisions_c = await stack.enter_async_context(
            tail(kafka(settings, AUDIT), settings.topic_decisions)
        )
        consumers = {
            p: await stack.enter_async_context(
                tail(kafka(settings, kafka_client.partner(p)), settings.partner_topic(p))
            )
            for p in partners
        }
        await producer.send_and_wait(
            settings.topic_inbound, inbound_record(settings, event), key=event["subject"].encode()
        )
        expect = decisions if decisions is not None else len(partners)
        records = await collect(
            decisions_c, until=expect, timeout_s=30, settle_s=1, split=split_decisions
        )
        gathered = await asyncio.gather(
            *(
                collect(c, until=0, timeout_s=1, settle_s=0.3, opener=opener(p))
                for p, c in consumers.items()
            )
        )
        deliveries = {
            p: [d for d in got if d["id"] == event["id"]]
            for p, got in zip(consumers, gathered, strict=True)
        }
    mine = [r for r in records if r["event_id"] == event["id"]]
    return Outcome(event, {r["partner_id"]: r for r in mine}, deliveries)


@cache
def _sealer(url: str, state_dir: Path, keks: str) -> EventSealer:
    return EventSealer.for_settings(
        Settings().model_copy(update={"database_url": url, "state_dir": state_dir, "keks": keks})
    )


def sealer(settings: Settings) -> EventSealer:
    """Seals as agencies and the API do, with the keys of ``settings``' database."""
    return _sealer(settings.database_url, settings.state_dir, settings.keks)


def inbound_record(settings: Settings, event: dict[str, Any], *, fresh: bool = False) -> bytes:
    """``event`` as an agency publishes it to the inbound topic: sealed to its survivor
    (``fresh``: with the survivor's key read now, not one cached before an erasure)."""
    if fresh:
        once = EventSealer.for_settings(settings)
        try:
            return once(json.dumps(event).encode())
        finally:
            once.close()
    return sealer(settings)(json.dumps(event).encode())
