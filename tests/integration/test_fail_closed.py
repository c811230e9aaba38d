"""Fail closed, lose nothing: with OPA stopped nothing is delivered; when it returns, the held
event is delivered exactly once. Uses a private OPA server so the shared one keeps running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from services.decision_records import split_decisions
from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.client import ADMIN, AUDIT, kafka
from services.runtime import running_relay
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.events import cloudevent, consent_change, inbound_record
from tests.support.keys import opener
from tests.support.registry import permit
from tests.support.stack import free_port, kafka_ready, opa_server

pytestmark = pytest.mark.integration


@pytest.fixture
async def isolated(settings: Settings, database: str, tmp_path: Path) -> AsyncIterator[Settings]:
    """Own topics, group and OPA port, so this relay shares nothing with the module relay."""
    tag = settings.topic_inbound.split(".")[0] + f"-fc{free_port()}"
    s = settings.model_copy(
        update={
            "topic_inbound": f"{tag}.inbound",
            "topic_decisions": f"{tag}.decisions",
            "topic_deadletter": f"{tag}.deadletter",
            "topic_consents": f"{tag}.consents",
            "partner_topic_prefix": f"{tag}.partner.",
            "relay_group": f"{tag}-relay",
            "relay_transactional_id": f"{tag}-relay-0",
            "opa_url": f"http://127.0.0.1:{free_port()}",
            "topic_seen": f"{tag}.seen",
            "opa_timeout_s": 0.5,
            "relay_retry_max_s": 0.5,
        }
    )
    await kafka_ready(s)
    await topics.ensure_topics(kafka(s, ADMIN), topics.partner_topics(s, ["lighthouse-shelter"]))
    yield s


async def test_R1_opa_down_delivers_nothing_then_exactly_once_when_back(
    isolated: Settings, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    s = isolated
    shelter = opener("lighthouse-shelter")
    port = int(s.opa_url.rsplit(":", 1)[1])
    survivor = "sv-int-outage"
    await producer.send_and_wait(
        s.topic_consents,
        consent_change(s, survivor, permit(["shelter"], ["service_referral"], ["*"])),
        key=survivor.encode(),
    )
    event = cloudevent(
        "harbor-outreach", survivor, {"survivor_name": "C", "age": 30, "service_needs": ["housing"]}
    )
    async with (
        tail(
            kafka(s, kafka_client.partner("lighthouse-shelter")),
            s.partner_topic("lighthouse-shelter"),
        ) as partner,
        tail(kafka(s, AUDIT), s.topic_decisions) as decisions,
        running_relay(s) as relay_task,
    ):
        # OPA is not running: the relay must hold the event, not deliver, not drop.
        await producer.send_and_wait(
            s.topic_inbound, inbound_record(s, event), key=survivor.encode()
        )
        await asyncio.sleep(4)
        assert not relay_task.done()
        assert await collect(partner, until=1, timeout_s=1, opener=shelter) == []
        assert await collect(decisions, until=1, timeout_s=0.5, split=split_decisions) == []

        with opa_server(s, port, tmp_path):
            delivered = await collect(partner, until=1, timeout_s=30, settle_s=3, opener=shelter)
            recorded = await collect(
                decisions, until=3, timeout_s=5, settle_s=1, split=split_decisions
            )

    assert [d["id"] for d in delivered] == [event["id"]]
    # One decision per subscribed partner, each made once, none before OPA was back.
    assert sorted((r["event_id"], r["partner_id"]) for r in recorded) == [
        (event["id"], p) for p in ("lighthouse-shelter", "metro-police", "northside-clinic")
    ]
    shelter_decision = next(r for r in recorded if r["partner_id"] == "lighthouse-shelter")
    assert sorted(delivered[0]["data"]) == shelter_decision["released"]
    assert delivered[0]["data"]["survivor_name"] == "C"
