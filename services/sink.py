"""Copy a Kafka topic into a SQL table, exactly once per record.

Read with ``read_committed`` (records of aborted relay transactions never arrive); offsets are
committed after the database commit, and a redelivered record hits a unique constraint of the
table and is skipped, so each record is stored once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.db import Base
from services.kafka_client import KafkaConn

# Writes one record inside the sink's database transaction (add a row, append to a chain…).
Write = Callable[[Session, ConsumerRecord[bytes, bytes]], None]


def as_row(to_row: Callable[[ConsumerRecord[bytes, bytes]], Base | None]) -> Write:
    """The common case: each record becomes (at most) one row."""

    def write(session: Session, record: ConsumerRecord[bytes, bytes]) -> None:
        row = to_row(record)
        if row is not None:
            session.add(row)

    return write


class TopicSink:
    """``run`` until ``stop``; ``catch_up`` waits until everything on the topic is stored."""

    def __init__(
        self,
        conn: KafkaConn,
        topic: str,
        group: str,
        sessions: sessionmaker[Session],
        write: Write,
    ) -> None:
        self._sessions = sessions
        self._write = write
        self._consumer = AIOKafkaConsumer(
            topic,
            **conn.kwargs(),
            group_id=group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        self._done: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
                for tp, records in batch.items():
                    for rec in records:
                        self._store(rec)
                    self._done[tp] = records[-1].offset + 1
                if batch:
                    await self._consumer.commit()
                for tp in self._consumer.assignment():
                    self._done[tp] = max(self._done.get(tp, 0), await self._consumer.position(tp))
                async with self._progress:
                    self._progress.notify_all()
        finally:
            await self._consumer.stop()

    def _store(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if not record.value:
            return
        try:
            with self._sessions() as session, session.begin():
                self._write(session, record)
        except IntegrityError:
            pass  # already stored

    async def catch_up(self, timeout_s: float = 10.0) -> None:
        assigned = self._consumer.assignment()
        ends = await self._consumer.end_offsets(list(assigned)) if assigned else {}

        def reached() -> bool:
            return all(self._done.get(tp, 0) >= end for tp, end in ends.items())

        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(reached)
