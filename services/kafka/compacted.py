"""A local copy of a compacted Kafka topic, brought up to the topic's end on demand.

``catch_up`` reads, with ``read_committed``, up to the end offsets as they stand when it is
called: afterwards the copy holds every record committed before the call. The relay calls it
before every batch for its consent view and its replay guard.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from services.kafka.client import KafkaConn
from services.kafka.topics import partitions
from services.unavailable import Unavailable


class ViewUnavailable(Unavailable):
    """The copy could not be brought up to date; deciding now could use stale facts."""

    cause = "consents_unavailable"


class CompactedTable:
    def __init__(self, conn: KafkaConn, topic: str, *, timeout_s: float = 5.0) -> None:
        self._topic = topic
        self._conn = conn
        self._timeout_s = timeout_s
        self._consumer = AIOKafkaConsumer(
            **conn.kwargs(),
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            # catch_up runs before every relay batch and must return as soon as the end is
            # reached; the default 500 ms broker-side wait would be paid on every batch.
            fetch_max_wait_ms=10,
        )
        self._partitions: list[TopicPartition] = []

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        raise NotImplementedError

    def apply_all(self, records: list[ConsumerRecord]) -> None:
        """Apply one fetched batch of a partition; may raise ``ViewUnavailable``."""
        for rec in records:
            self.apply(rec.key, rec.value)

    async def apply_fetched(self, records: list[ConsumerRecord]) -> None:
        """``apply_all`` from ``catch_up``; a table whose batches need I/O (a key query)
        overrides this to do it off the event loop."""
        self.apply_all(records)

    async def start(self) -> None:
        await self._consumer.start()
        parts = await partitions(self._conn, self._topic)
        if not parts:
            await self._consumer.stop()
            raise ViewUnavailable(f"topic {self._topic} does not exist")
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(parts)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def catch_up(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                ends = await self._consumer.end_offsets(self._partitions)
                while await self._behind(ends):
                    batch = await self._consumer.getmany(timeout_ms=100)
                    pending = dict(batch)
                    try:
                        for tp, records in batch.items():
                            await self.apply_fetched(records)
                            del pending[tp]
                    except ViewUnavailable:
                        # Read what was not applied again next time: never skip a change.
                        for tp, records in pending.items():
                            self._consumer.seek(tp, records[0].offset)
                        raise
        except TimeoutError as exc:
            raise ViewUnavailable(f"{self._topic} could not be read up to its end in time") from exc

    async def _behind(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return True
        return False
