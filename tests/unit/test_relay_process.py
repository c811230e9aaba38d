"""Relay.process with a fake policy: batching into one policy call, dead letters, offsets.

The real OPA, Kafka and consent topic are exercised in tests/integration/.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from services.broker.consent_view import StaticConsentView
from services.broker.pipeline import seal
from services.broker.pipeline.model import Recipient
from services.broker.pipeline.seal import Sealer
from services.broker.pipeline.validate import SchemaRegistry
from services.broker.registry import RegistrySnapshot
from services.broker.relay import BatchResult, Relay
from services.broker.replay import StaticSeen
from services.broker.survivor_keys import StaticSurvivorKeys
from services.decision_records import split_decisions
from services.events import provenance
from services.settings import Settings
from tests.support.pipeline import NOW, make_recipient


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


AGENCY_KEY = SigningKey.generate()
PARTNER_KEYS = {p: PrivateKey.generate() for p in ("lighthouse-shelter", "northside-clinic")}
RELAY_KEY = PrivateKey.generate()


def event(i: int, agency: str = "harbor-outreach") -> bytes:
    doc = {
        "specversion": "1.0",
        "id": f"evt-{i}",
        "source": f"/agencies/{agency}",
        "type": "accord.referral.made",
        "subject": f"sv-{i}",
        "time": "2026-11-24T12:00:00Z",
        "data": {"survivor_name": "A", "age": 20},
    }
    return json.dumps(provenance.sign_event(doc, AGENCY_KEY)).encode()


def keyed(partner_id: str, partner_type: str) -> Recipient:
    key = seal.public_key_of(PARTNER_KEYS[partner_id])
    return replace(make_recipient(partner_id, partner_type), public_key=key)


SNAPSHOT = RegistrySnapshot(
    {"harbor-outreach": "state-a", "lighthouse-shelter": "state-a"},
    {
        "accord.referral.made": (
            keyed("lighthouse-shelter", "shelter"),
            keyed("northside-clinic", "health"),
        )
    },
    {a: provenance.public_key_of(AGENCY_KEY) for a in ("harbor-outreach", "lighthouse-shelter")},
)


def relay(
    policy: RecordingPolicy,
    schemas: SchemaRegistry,
    *,
    chunk: int = 100,
    seen: StaticSeen | None = None,
    consents: dict[str, list[Any]] | None = None,
    keys: StaticSurvivorKeys | None = None,
) -> Relay:
    # Plaintext records unless keys are given (sealing: tests/unit/test_inbound_seal.py).
    return Relay(
        Settings(
            topic_decisions="d",
            topic_deadletter="dlq",
            topic_seen="seen",
            partner_topic_prefix="p.",
            kafka_sealing="optional" if keys is None else "required",
            opa_batch_size=chunk,
        ),
        registry=cast(Any, None),
        keys=keys or StaticSurvivorKeys(),
        consents=StaticConsentView(consents or {}),
        policy=policy,
        schemas=schemas,
        seen=StaticSeen() if seen is None else seen,
        sealer=Sealer(RELAY_KEY),
        clock=lambda: NOW,
    )


def only(results: dict[TopicPartition, BatchResult]) -> BatchResult:
    (result,) = results.values()
    return result


async def test_a_small_batch_is_spread_over_the_concurrent_policy_calls(
    schemas: SchemaRegistry,
) -> None:
    # 10 pairs, 2 requests in flight: two calls of 5, so OPA evaluates them on two cores.
    policy = RecordingPolicy()
    tp = TopicPartition("in", 0)
    batch = {tp: [Msg(i, event(i)) for i in range(5)]}
    result = only(await relay(policy, schemas).process(cast(Any, batch), SNAPSHOT))
    assert [len(c) for c in policy.calls] == [5, 5]
    assert result.offsets == {tp: 5}
    assert result.deliveries == 10
    assert sorted({r.topic for r in result.records}) == [
        "d",
        "p.lighthouse-shelter",
        "p.northside-clinic",
        "seen",
    ]


async def test_large_batches_are_asked_in_chunks_and_answers_keep_their_pairs(
    schemas: SchemaRegistry,
) -> None:
    policy = RecordingPolicy()
    batch = {TopicPartition("in", 0): [Msg(i, event(i)) for i in range(12)]}  # 24 pairs
    result = only(await relay(policy, schemas, chunk=10).process(cast(Any, batch), SNAPSHOT))
    assert [len(c) for c in policy.calls] == [10, 10, 4]
    asked = [(i["event"]["id"], i["partner"]["id"]) for c in policy.calls for i in c]
    decided = [
        d for r in result.records if r.topic == "d" for d in split_decisions(json.loads(r.value))
    ]
    assert [(d["event_id"], d["partner_id"]) for d in decided] == asked
    assert len(set(asked)) == 24


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
    result = only(await relay(policy, schemas).process(cast(Any, batch), SNAPSHOT))
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
    await relay(policy, schemas, consents={"sv-3": [consent]}).process(cast(Any, batch), SNAPSHOT)
    assert all(item["consents"] == [consent] for item in policy.calls[0])


async def test_deliveries_are_sealed_for_their_partner_only(schemas: SchemaRegistry) -> None:
    batch = {TopicPartition("in", 0): [Msg(0, event(5))]}
    result = only(await relay(RecordingPolicy(), schemas).process(cast(Any, batch), SNAPSHOT))
    record = next(r for r in result.records if r.topic == "p.lighthouse-shelter")
    assert b"sv-5" not in record.value.split(b'"box"')[1]  # the payload is not in clear
    relay_pub = seal.public_key_of(RELAY_KEY)
    opened = seal.open_delivery(
        record.value,
        partner_id="lighthouse-shelter",
        partner_key=PARTNER_KEYS["lighthouse-shelter"],
        relay_key=relay_pub,
    )
    assert opened.event["data"] == {"age": 20}
    with pytest.raises(seal.OpenError):
        seal.open_delivery(
            record.value,
            partner_id="lighthouse-shelter",
            partner_key=PARTNER_KEYS["northside-clinic"],
            relay_key=relay_pub,
        )


async def test_an_event_replayed_within_one_batch_is_dead_lettered(schemas: SchemaRegistry) -> None:
    same = event(9)
    batch = {TopicPartition("in", 0): [Msg(0, same), Msg(1, same)]}
    result = only(await relay(RecordingPolicy(), schemas).process(cast(Any, batch), SNAPSHOT))
    dead = [json.loads(r.value)["code"] for r in result.records if r.topic == "dlq"]
    assert dead == ["replayed"] and result.events == 1


async def test_one_poll_of_two_partitions_is_one_fan_out_split_by_partition(
    schemas: SchemaRegistry,
) -> None:
    policy = RecordingPolicy()
    a, b = TopicPartition("in", 0), TopicPartition("in", 1)
    batch = {a: [Msg(10, event(1)), Msg(11, event(2))], b: [Msg(40, event(3))]}
    results = await relay(policy, schemas).process(cast(Any, batch), SNAPSHOT)
    # 3 events × 2 partners, one fan-out for the poll (spread over the 2 requests in flight)
    assert sorted(len(c) for c in policy.calls) == [3, 3]
    assert results[a].offsets == {a: 12} and results[b].offsets == {b: 41}
    assert (results[a].deliveries, results[b].deliveries) == (4, 2)

    def decided(tp: TopicPartition) -> set[str]:
        return {json.loads(r.value)["event_id"] for r in results[tp].records if r.topic == "d"}

    # each partition's transaction carries the decisions of its own events only
    assert decided(a) == {"evt-1", "evt-2"} and decided(b) == {"evt-3"}
    assert set(results[a].accepted) == {"harbor-outreach/evt-1", "harbor-outreach/evt-2"}


async def test_an_event_replayed_on_another_partition_in_the_same_poll_is_dead_lettered(
    schemas: SchemaRegistry,
) -> None:
    same = event(9)
    a, b = TopicPartition("in", 0), TopicPartition("in", 1)
    batch = {a: [Msg(0, same)], b: [Msg(0, same)]}
    results = await relay(RecordingPolicy(), schemas).process(cast(Any, batch), SNAPSHOT)
    assert results[a].events == 1 and results[a].rejected == 0
    dead = [json.loads(r.value)["code"] for r in results[b].records if r.topic == "dlq"]
    assert dead == ["replayed"] and results[b].events == 0


async def test_keys_remembered_after_a_commit_refuse_a_replay_in_the_next_poll(
    schemas: SchemaRegistry,
) -> None:
    seen = StaticSeen()
    r = relay(RecordingPolicy(), schemas, seen=seen)
    tp = TopicPartition("in", 0)
    first = only(await r.process(cast(Any, {tp: [Msg(0, event(4))]}), SNAPSHOT))
    seen.remember(first.accepted)  # what the relay loop does once the transaction commits
    again = only(await r.process(cast(Any, {tp: [Msg(1, event(4))]}), SNAPSHOT))
    assert [json.loads(x.value)["code"] for x in again.records if x.topic == "dlq"] == ["replayed"]
