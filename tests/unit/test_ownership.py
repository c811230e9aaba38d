"""services/broker/ownership.py through its public API, with stand-in producers and consumer.

Fencing between real relay processes is shown by tests/integration/test_relay_instances.py;
these pin down what the module promises the loop: one producer per partition with the id
derived from it, a producer that fails to start never kept, and which fetched records an
instance relays.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from services.broker.ownership import Handover, PartitionProducers, claim
from services.settings import Settings
from tests.support.stand_ins import StandInConsumer

A, B = TopicPartition("inbound", 0), TopicPartition("inbound", 1)


class StandInProducer:
    def __init__(self, transactional_id: str, *, fails: bool = False) -> None:
        self.transactional_id = transactional_id
        self.fails = fails
        self.started = self.stopped = 0

    async def start(self) -> None:
        self.started += 1
        if self.fails:
            raise KafkaConnectionError("no broker")

    async def stop(self) -> None:
        self.stopped += 1


class Factory:
    def __init__(self, *, fails: bool = False) -> None:
        self.fails = fails
        self.made: list[StandInProducer] = []

    def __call__(self, transactional_id: str) -> AIOKafkaProducer:
        self.made.append(StandInProducer(transactional_id, fails=self.fails))
        return cast(AIOKafkaProducer, self.made[-1])


def producers(factory: Factory) -> PartitionProducers:
    return PartitionProducers(Settings(relay_transactional_id="accord-relay"), factory=factory)


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("inbound", 0, offset, 0, 0, None, b"{}", None, 0, 2, [])


def test_each_partition_has_its_own_transactional_id() -> None:
    p = producers(Factory())
    assert p.transactional_id(A) == "accord-relay.inbound.0"
    assert p.transactional_id(B) == "accord-relay.inbound.1"


async def test_a_partitions_producer_is_started_once_and_kept() -> None:
    factory = Factory()
    p = producers(factory)
    first = await p.get(A)
    assert await p.get(A) is first and p.current(A) is first
    assert [(m.transactional_id, m.started) for m in factory.made] == [
        ("accord-relay.inbound.0", 1)
    ]
    assert p.current(B) is None


async def test_a_producer_that_fails_to_start_is_stopped_and_not_kept() -> None:
    factory = Factory(fails=True)
    p = producers(factory)
    with pytest.raises(KafkaError):
        await p.get(A)
    assert p.current(A) is None
    assert factory.made[0].stopped == 1  # never left open


async def test_closing_forgets_the_writer_and_where_it_left_off() -> None:
    factory = Factory()
    p = producers(factory)
    await p.get(A)
    await p.get(B)
    p.committed(A, 10)
    p.committed(B, 20)
    await p.close_unassigned({B})
    assert (p.current(A), p.resume_at(A)) == (None, None)
    assert p.current(B) is not None and p.resume_at(B) == 20
    await p.close_all()
    assert p.current(B) is None and [m.stopped for m in factory.made] == [1, 1]


async def test_a_partition_revoked_since_the_fetch_is_not_relayed_here() -> None:
    factory = Factory()
    consumer = StandInConsumer({B})
    mine = await claim(cast(Any, consumer), producers(factory), A, [record(0)])
    assert mine == [] and factory.made == []  # no take-over of a partition not ours


async def test_a_kept_partition_relays_only_what_is_not_committed_yet() -> None:
    p = producers(Factory())
    await p.get(A)
    p.committed(A, 3)
    consumer = StandInConsumer({A})
    mine = await claim(cast(Any, consumer), p, A, [record(o) for o in range(5)])
    assert [m.offset for m in mine] == [3, 4]


async def test_a_failed_take_over_raises_and_leaves_no_writer() -> None:
    p = producers(Factory(fails=True))
    with pytest.raises(KafkaError):
        await claim(cast(Any, StandInConsumer({A})), p, A, [record(0)])
    assert p.current(A) is None


async def test_a_take_over_that_fails_on_assignment_is_deferred_to_the_loop() -> None:
    factory = Factory(fails=True)
    p = producers(factory)
    consumer = StandInConsumer({A})
    await Handover(cast(Any, consumer), p).on_partitions_assigned([A])
    assert p.current(A) is None and consumer.seeks == []
    assert factory.made[0].started == 1  # it tried: the loop takes the partition over later
