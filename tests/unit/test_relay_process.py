"""Relay.process with a fake policy: batching into one policy call, dead letters, offsets.

The real OPA, Kafka and consent topic are exercised in tests/integration/.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from aiokafka import TopicPartition

from services.broker.pipeline.validate import SchemaRegistry
from services.broker.registry import RegistrySnapshot
from services.broker.relay import Relay
from services.consent.view import StaticConsentView
from services.settings import Settings
from tests.unit.conftest import NOW, make_recipient


@dataclass
class Msg:
    offset: int
    value: bytes


class RecordingPolicy:
    """Releases ``age`` to everyone; records every call it gets."""

    def __init__(self) -> None:
        self.calls: list[list[dict[str, Any]]] = []

    async def decide(self, items: Sequence[dict[str, Any]]) -> list[Any]:
        self.calls.append(list(items))
        return [{"allow": True, "fields": ["age"], "policy_revision": "fake"} for _ in items]


def event(i: int, agency: str = "harbor-outreach") -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"evt-{i}",
            "source": f"/agencies/{agency}",
            "type": "accord.referral.made",
            "subject": f"sv-{i}",
            "time": "2026-11-24T12:00:00Z",
            "data": {"survivor_name": "A", "age": 20},
        }
    ).encode()


SNAPSHOT = RegistrySnapshot(
    {"harbor-outreach": "state-a", "lighthouse-shelter": "state-a"},
    {
        "accord.referral.made": (
            make_recipient("lighthouse-shelter", "shelter"),
            make_recipient("northside-clinic", "health"),
        )
    },
)


def relay(policy: RecordingPolicy, schemas: SchemaRegistry, **consents: Any) -> Relay:
    return Relay(
        Settings(topic_decisions="d", topic_deadletter="dlq", partner_topic_prefix="p."),
        registry=cast(Any, None),
        consents=StaticConsentView(consents),
        policy=policy,
        schemas=schemas,
        clock=lambda: NOW,
    )


async def test_one_policy_call_per_batch_for_every_event_partner_pair(
    schemas: SchemaRegistry,
) -> None:
    policy = RecordingPolicy()
    tp = TopicPartition("in", 0)
    batch = {tp: [Msg(i, event(i)) for i in range(5)]}
    result = await relay(policy, schemas).process(cast(Any, batch), SNAPSHOT)
    assert len(policy.calls) == 1 and len(policy.calls[0]) == 10
    assert result.offsets == {tp: 5}
    assert result.deliveries == 10
    assert sorted({r.topic for r in result.records}) == [
        "d",
        "p.lighthouse-shelter",
        "p.northside-clinic",
    ]


async def test_publisher_does_not_receive_its_own_event(schemas: SchemaRegistry) -> None:
    policy = RecordingPolicy()
    batch = {TopicPartition("in", 0): [Msg(0, event(0, agency="lighthouse-shelter"))]}
    await relay(policy, schemas).process(cast(Any, batch), SNAPSHOT)
    assert [i["partner"]["id"] for i in policy.calls[0]] == ["northside-clinic"]


async def test_poison_record_goes_to_dead_letters_and_the_batch_moves_on(
    schemas: SchemaRegistry,
) -> None:
    policy = RecordingPolicy()
    tp = TopicPartition("in", 2)
    batch = {tp: [Msg(7, b"\x00garbage"), Msg(8, event(8))]}
    result = await relay(policy, schemas).process(cast(Any, batch), SNAPSHOT)
    dead = [json.loads(r.value) for r in result.records if r.topic == "dlq"]
    assert dead == [
        {
            "code": "malformed",
            "detail": dead[0]["detail"],
            "event_id": None,
            "agency_id": None,
            "inbound": {"topic": "in", "partition": 2, "offset": 7},
        }
    ]
    assert result.offsets == {tp: 9}  # past the poison record: the partition never stalls
    assert result.rejected == 1 and result.events == 1


async def test_consents_of_the_event_survivor_go_to_the_policy(schemas: SchemaRegistry) -> None:
    policy = RecordingPolicy()
    consent = {"id": "c-1", "version": 4, "status": "active", "provisions": []}
    batch = {TopicPartition("in", 0): [Msg(0, event(3))]}
    await relay(policy, schemas, **{"sv-3": [consent]}).process(cast(Any, batch), SNAPSHOT)
    assert all(item["consents"] == [consent] for item in policy.calls[0])
