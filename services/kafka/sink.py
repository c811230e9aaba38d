"""Copy a Kafka topic into a SQL table, exactly once per record, one transaction per poll.

Read with ``read_committed`` (records of aborted relay transactions never arrive). Each poll's
records are stored in one database transaction, in a worker thread so that a slow database
never stalls the event loop (and with it the consumer's heartbeats). Offsets are committed
after the database commit; a record redelivered after a crash is recognised by its unique
key: the keys of a batch that are already stored are filtered out first, so one redelivered
record never fails the whole batch's transaction. Should another writer store one of the keys
between that check and the commit (two workers during a rebalance), the unique constraint
refuses the transaction and the batch is stored again, checked anew.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.kafka import topics
from services.kafka.client import KafkaConn
from services.observability import metrics

log = logging.getLogger("accord.sink")

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
Record: TypeAlias = ConsumerRecord  # of bytes, bytes (aiokafka has no type hints)


@dataclass(frozen=True)
class Table(Generic[K, T]):
    """How a sink stores its topic's records.

    ``parse``: a record's unique key and what to write (or a list of them, for a record
    that holds several items), or None for a record that cannot be stored (it logs why, by
    position only); ``stored``: which of these keys the database
    holds already; ``write``: store one item in the batch's transaction.
    """

    parse: Callable[[Record], tuple[K, T] | list[tuple[K, T]] | None]
    stored: Callable[[Session, Collection[K]], set[K]]
    write: Callable[[Session, T], None]


ATTEMPTS = 3  # a batch refused by a unique constraint is checked and stored again, this often


class TopicSink(Generic[K, T]):
    """``run`` until ``stop``; ``catch_up`` waits until everything on the topic is stored."""

    def __init__(
        self,
        conn: KafkaConn,
        topic: str,
        group: str,
        sessions: sessionmaker[Session],
        table: Table[K, T],
        *,
        max_records: int = 500,
        name: str = "",
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.topic = topic
        self.group = group
        self.name = name or topic  # the metrics' `sink` label: a fixed name, never data
        self._sessions = sessions
        self._table = table
        self._max_records = max_records
        self._retry = (retry_initial_s, retry_max_s)
        self._conn = conn
        self._consumer = AIOKafkaConsumer(
            **conn.kwargs(),
            group_id=group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        self._committed: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self.stored_total = 0  # records written by this sink (not counting redeliveries)
        self.database_ok = True  # the last batch was stored (or there was nothing to store)
        self.started = False

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        self.started = True
        backoff = self._retry[0]
        try:
            if not await self._topic_exists(stop):
                return
            self._consumer.subscribe([self.topic])
            while not stop.is_set():
                # getmany waits without end while the group is (re)assigning: not past a stop.
                batch = await _unless(
                    stop, self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
                )
                records = [r for recs in batch.values() for r in recs]
                if records:
                    try:
                        stored = await asyncio.to_thread(self.store_batch, records)
                        self.stored_total += stored
                        metrics.SINK_RECORDS.labels(self.name).inc(stored)
                    except DBAPIError as exc:
                        self.database_ok = False
                        log.error(
                            "sink batch not stored; retrying",
                            extra={"topic": self.topic, "error": type(exc.orig).__name__},
                        )
                        self._rewind(batch)
                        await _sleep_unless(stop, backoff)
                        backoff = min(backoff * 2, self._retry[1])
                        continue
                    self.database_ok, backoff = True, self._retry[0]
                await self._commit_positions()
                async with self._progress:
                    self._progress.notify_all()
        finally:
            self.started = False
            await self._consumer.stop()

    async def close(self) -> None:
        """Release a sink that was never run (``run`` stops its consumer itself)."""
        await self._consumer.stop()

    async def _topic_exists(self, stop: asyncio.Event) -> bool:
        """Wait for the topic (the relay creates it) rather than subscribe to nothing, which
        aiokafka logs as an error ten times a second."""
        told = False
        while not stop.is_set():
            if await topics.partitions(self._conn, self.topic, timeout_s=1.0):
                return True
            if not told:
                log.warning("waiting for the topic to be created", extra={"topic": self.topic})
                told = True
            await _sleep_unless(stop, 2.0)
        return False

    def store_batch(self, records: list[Record]) -> int:
        """Store a poll's records in one transaction (blocking: call it in a thread); returns
        how many were new."""
        items: dict[K, T] = {}
        for record in records:
            if not record.value:
                continue
            parsed = self._table.parse(record)
            for key, item in [parsed] if isinstance(parsed, tuple) else parsed or []:
                items.setdefault(key, item)  # a key twice in one poll: stored once
        if not items:
            return 0
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self._sessions() as session, session.begin():
                    done = self._table.stored(session, list(items))
                    fresh = [item for key, item in items.items() if key not in done]
                    for item in fresh:
                        self._table.write(session, item)
                return len(fresh)
            except IntegrityError:
                if attempt == ATTEMPTS:
                    raise
                log.warning("sink batch met a concurrent writer; checking again")
        raise AssertionError("unreachable")

    def _rewind(self, batch: dict[TopicPartition, list[Record]]) -> None:
        """Fetch a batch that was not stored again (never skip a record)."""
        assigned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp in assigned:
                self._consumer.seek(tp, records[0].offset)

    async def _commit_positions(self) -> None:
        """Commit how far this sink has read wherever that moved: after a stored batch, and
        past transaction markers and aborted records, which no batch shows."""
        moved: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            position = await self._consumer.position(tp)
            end = self._consumer.last_stable_offset(tp)
            if end is not None:
                self._ends[tp] = end
            if position != self._committed.get(tp):
                moved[tp] = position
        if moved:
            await self._consumer.commit(moved)
            self._committed.update(moved)
        for tp in self._consumer.assignment():
            lag = self._ends.get(tp, 0) - self._committed.get(tp, 0)
            metrics.SINK_LAG.labels(self.name, str(tp.partition)).set(max(0, lag))

    def assigned(self) -> bool:
        return self.started and bool(self._consumer.assignment())

    def lag(self) -> int:
        """Records on the assigned partitions not yet stored (from the last fetch's end)."""
        return sum(
            max(0, self._ends.get(tp, 0) - self._committed.get(tp, 0))
            for tp in self._consumer.assignment()
        )

    async def kafka_reachable(self, timeout_s: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._consumer.topics()
        except Exception:  # any failure to reach the cluster is "not ready"
            return False
        return True

    async def catch_up(self, timeout_s: float = 10.0) -> None:
        """Wait until this sink has stored (and committed) everything on the topic now."""
        async with asyncio.timeout(timeout_s):
            async with self._progress:  # notified after every poll
                await self._progress.wait_for(lambda: bool(self._consumer.assignment()))
            assigned = self._consumer.assignment()
            ends = await self._consumer.end_offsets(list(assigned))

            def reached() -> bool:
                return all(self._committed.get(tp, 0) >= end for tp, end in ends.items())

            async with self._progress:
                await self._progress.wait_for(reached)


class SinkProgress:
    """How far a sink's consumer group has stored a topic, seen from another process (the API
    waits on it before telling earlier recipients that a consent was revoked): it needs only
    to describe the topic and the group, not to read them."""

    def __init__(self, conn: KafkaConn, topic: str, group: str) -> None:
        self._conn = conn
        self._topic = topic
        self._group = group
        self._consumer = AIOKafkaConsumer(
            **conn.kwargs(), enable_auto_commit=False, isolation_level="read_committed"
        )
        self._admin = AIOKafkaAdminClient(**conn.kwargs())

    async def start(self) -> None:
        await self._consumer.start()
        await self._admin.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def catch_up(self, timeout_s: float = 10.0) -> None:
        """Wait until the group has committed, on every partition, the topic's end as it
        stands now (``read_committed``: the last stable offset). TimeoutError if not in time."""
        async with asyncio.timeout(timeout_s):
            # Waits while the topic does not exist (yet): then this times out, never passes.
            parts = await topics.partitions(self._conn, self._topic, timeout_s=timeout_s)
            if not parts:  # absent, or not visible to this principal: not known to be stored
                raise TimeoutError(f"{self._topic} has no partitions to wait for")
            tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
            ends: dict[TopicPartition, int] = await self._consumer.end_offsets(tps)
            while True:
                got: dict[TopicPartition, Any] = await self._admin.list_consumer_group_offsets(
                    self._group, partitions=tps
                )
                if all(end == 0 or _offset(got.get(tp)) >= end for tp, end in ends.items()):
                    return
                await asyncio.sleep(0.1)


def _offset(meta: Any) -> int:
    return int(meta.offset) if meta is not None and meta.offset is not None else -1


async def _unless(
    stop: asyncio.Event, fetch: Coroutine[Any, Any, dict[TopicPartition, list[Record]]]
) -> dict[TopicPartition, list[Record]]:
    """``fetch``'s records, or none if ``stop`` is set first (the fetch is cancelled: records
    it had not returned are fetched again from the committed offsets next time)."""
    task = asyncio.ensure_future(fetch)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {}


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
