"""Partition ownership: which relay instance writes for an inbound partition, and from where.

aiokafka has no consumer-group fencing (KIP-447), so zombie fencing uses the older scheme
Kafka Streams used: whichever relay instance owns a partition writes through the producer
``<relay_transactional_id>.<topic>.<partition>`` (``PartitionProducers``). Starting that
producer fences a previous owner (its open transaction is aborted, its next commit fails),
so several instances in one group never both deliver the same input record.

- ``take_over``: fence the previous writer, then go on from its last committed offset, read
  with ``require_stable`` (``stable_committed``).
- ``Handover``: the consumer's rebalance listener; takes over newly assigned partitions and
  resumes kept ones after this instance's own last commit.
- ``claim``: the records of a fetched partition this instance relays now.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import KafkaError

from services.kafka.client import RELAY, kafka
from services.kafka.offsets import stable_committed
from services.observability import metrics
from services.settings import Settings

log = logging.getLogger("accord.relay")

RETRY_BACKOFF_MS = 20
ProducerFactory = Callable[[str], AIOKafkaProducer]  # transactional id → an unstarted producer


class PartitionProducers:
    """One transactional producer per inbound partition, its id derived from the partition,
    and per partition the next offset known committed (read after fencing, then advanced
    by each commit)."""

    def __init__(self, settings: Settings, *, factory: ProducerFactory | None = None) -> None:
        self._s = settings
        self._factory = factory or self._producer
        self._by_tp: dict[TopicPartition, AIOKafkaProducer] = {}
        self._resume: dict[TopicPartition, int] = {}

    def _producer(self, transactional_id: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **kafka(self._s, RELAY).kwargs(),
            transactional_id=transactional_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=self._s.relay_linger_ms,
            # A transaction begun while the previous one's markers are being written is told
            # CONCURRENT_TRANSACTIONS and retried after this back-off (aiokafka's 100 ms
            # default was most of a poll's commit at half load).
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )

    def committed(self, tp: TopicPartition, next_offset: int) -> None:
        self._resume[tp] = next_offset

    def resume_at(self, tp: TopicPartition) -> int | None:
        """Where the committed input of ``tp`` ends, as far as this instance's writer knows."""
        return self._resume.get(tp)

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self._s.relay_transactional_id}.{tp.topic}.{tp.partition}"

    def current(self, tp: TopicPartition) -> AIOKafkaProducer | None:
        return self._by_tp.get(tp)

    async def get(self, tp: TopicPartition) -> AIOKafkaProducer:
        """The partition's producer, started (which fences its previous owner) if new."""
        if tp not in self._by_tp:
            producer = self._factory(self.transactional_id(tp))
            try:
                await producer.start()  # init_transactions: fences the partition's previous owner
            except BaseException:
                # Closed here, or it is garbage-collected open ("Unclosed AIOKafkaProducer");
                # the caller holds the batch and takes the partition over again.
                with contextlib.suppress(KafkaError):
                    await producer.stop()
                raise
            self._by_tp[tp] = producer
        return self._by_tp[tp]

    async def close(self, tp: TopicPartition) -> None:
        producer = self._by_tp.pop(tp, None)
        self._resume.pop(tp, None)  # a new writer starts from the group's committed offset
        if producer is not None:
            try:
                await producer.stop()
            except KafkaError:  # a fenced producer may fail to abort; it is gone either way
                log.debug("closing a fenced producer failed", exc_info=True)

    async def close_unassigned(self, assigned: set[TopicPartition]) -> None:
        for tp in [tp for tp in self._by_tp if tp not in assigned]:
            await self.close(tp)

    async def close_all(self) -> None:
        for tp in list(self._by_tp):
            await self.close(tp)


class Handover(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, fence the partition's previous owner first, then read the committed
    offset with ``require_stable``: a transaction the previous owner was committing is
    finished (or aborted) by then, and its offsets applied, so the offset read matches what
    was delivered.

    A partition this instance keeps goes on after its own last commit instead: the consumer
    resets a reassigned partition to the group's committed offset with aiokafka's plain fetch,
    which may predate a transaction this instance committed a moment ago."""

    def __init__(self, consumer: AIOKafkaConsumer, producers: PartitionProducers) -> None:
        self._consumer = consumer
        self._producers = producers
        self.rebalances = 0  # how many times the assignment was handed over (for the loop)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.rebalances += 1
        return None  # producers of lost partitions are closed by the loop, between batches

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.rebalances += 1
        for tp in assigned:
            if self._producers.current(tp) is not None:  # kept: still its writer
                resume = self._producers.resume_at(tp)
                if resume is not None:
                    self._consumer.seek(tp, resume)
                continue
            try:
                await take_over(self._consumer, self._producers, tp)
            except KafkaError:  # the loop takes the partition over before its first batch
                log.warning("take-over deferred", extra={"partition": tp.partition})
                await self._producers.close(tp)


async def take_over(
    consumer: AIOKafkaConsumer, producers: PartitionProducers, tp: TopicPartition
) -> None:
    """Fence whoever wrote for ``tp`` before, then go on from its last committed offset."""
    await producers.get(tp)
    committed = await stable_committed(consumer, tp)
    if tp not in consumer.assignment():
        return  # revoked meanwhile
    if committed is not None:
        producers.committed(tp, committed)
        consumer.seek(tp, committed)
    else:
        await consumer.seek_to_beginning(tp)


async def claim(
    consumer: AIOKafkaConsumer,
    producers: PartitionProducers,
    tp: TopicPartition,
    msgs: list[ConsumerRecord],
) -> list[ConsumerRecord]:
    """The fetched records of ``tp`` this instance relays now: none if the partition was
    revoked since the fetch (its new owner relays them) or is new to this instance or fenced
    (it is taken over and goes on from the committed offset, which this fetch may predate);
    else those not committed yet. Raises ``KafkaError`` if the take-over fails."""
    if tp not in consumer.assignment():
        return []
    if producers.current(tp) is None:
        await take_over(consumer, producers, tp)
        return []
    return not_yet_committed(producers, tp, msgs)


def not_yet_committed(
    producers: PartitionProducers, tp: TopicPartition, msgs: list[ConsumerRecord]
) -> list[ConsumerRecord]:
    """Drop records below what is known to be committed for ``tp``.

    The consumer sets a newly assigned partition's position from a committed-offset read
    that runs concurrently with the hand-over and may predate the previous writer's last
    transaction; records fetched from there were relayed already and must not be read twice
    (the replay guard would refuse them, but an agency would see false "replayed" rejections).
    """
    floor = producers.resume_at(tp)
    if floor is None or msgs[0].offset >= floor:
        return msgs
    log.info("skipped records already committed", extra={"partition": tp.partition})
    return [m for m in msgs if m.offset >= floor]


def observe_assignment(consumer: AIOKafkaConsumer, producers: PartitionProducers) -> None:
    """Assigned partitions and, per partition, the committed inbound records not relayed yet
    (the last stable offset of the latest fetch minus this instance's last commit)."""
    assigned = consumer.assignment()
    metrics.RELAY_ASSIGNED_PARTITIONS.set(len(assigned))
    done = {tp: at for tp in assigned if (at := producers.resume_at(tp)) is not None}
    metrics.record_lag(metrics.RELAY_LAG, metrics.partition_lags(consumer, done))
