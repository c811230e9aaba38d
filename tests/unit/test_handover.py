"""Rebalance hand-over: where a relay instance goes on with a partition it is given.

Pure logic with a stand-in consumer; the real hand-over between processes is shown by
tests/integration/test_relay_instances.py.
"""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from services.broker.ownership import Handover, PartitionProducers, not_yet_committed
from services.settings import Settings

TP = TopicPartition("inbound", 0)


class StandInConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TopicPartition]:
        return {TP}


def kept_writer() -> PartitionProducers:
    producers = PartitionProducers(Settings())
    producers._by_tp[TP] = object()  # a live writer, never used
    return producers


async def test_a_kept_partition_goes_on_after_this_instances_last_commit() -> None:
    # The group's committed offset may still read 234 while the markers of the transaction
    # that committed up to 263 are being written: resuming there would read 29 events twice.
    consumer, producers = StandInConsumer(), kept_writer()
    producers.committed(TP, 263)
    await Handover(consumer, producers).on_partitions_assigned([TP])
    assert consumer.seeks == [(TP, 263)]


async def test_a_kept_partition_without_a_commit_keeps_the_consumers_position() -> None:
    consumer, producers = StandInConsumer(), kept_writer()
    await Handover(consumer, producers).on_partitions_assigned([TP])
    assert consumer.seeks == []


async def test_closing_a_writer_forgets_where_it_left_off() -> None:
    # A later writer for the partition must start from the group's committed offset, which
    # by then may be ahead of this instance's (another instance may have relayed meanwhile).
    producers = kept_writer()
    producers.committed(TP, 263)
    stopped: list[Any] = []

    class Stoppable:
        async def stop(self) -> None:
            stopped.append(True)

    producers._by_tp[TP] = Stoppable()
    await producers.close(TP)
    assert stopped == [True]
    assert producers.resume_at(TP) is None


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("inbound", 0, offset, 0, 0, None, b"{}", None, 0, 2, [])


def test_records_below_the_known_committed_offset_are_not_read_twice() -> None:
    # Seen in CI: the new owner's consumer fetched from 525 though the fenced previous
    # writer's transaction had committed through 551; those 27 events were relayed already.
    producers = kept_writer()
    producers.committed(TP, 552)
    batch = [record(o) for o in range(525, 560)]
    assert [m.offset for m in not_yet_committed(producers, TP, batch)] == list(range(552, 560))
    assert not_yet_committed(producers, TP, batch[:27]) == []


def test_without_a_known_offset_every_record_is_relayed() -> None:
    batch = [record(o) for o in range(3)]
    assert not_yet_committed(kept_writer(), TP, batch) == batch
