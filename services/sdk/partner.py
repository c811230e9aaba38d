"""What a partner system runs to receive its deliveries: a read_committed consumer of its topic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.kafka.client import KafkaConn
from services.kafka.topics import partitions


@asynccontextmanager
async def tail(
    conn: KafkaConn, topic: str, *, from_beginning: bool = False
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer assigned to every partition of ``topic``, at its end (or its beginning).

    Only committed records are read: a delivery whose relay transaction aborted never shows.
    """
    consumer = AIOKafkaConsumer(
        **conn.kwargs(), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        parts = await partitions(conn, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            # Resolve the end now, before anything new is produced. A topic created a moment
            # ago may have no leader yet; retry rather than resolve the end later (too late).
            for attempt in range(50):
                try:
                    ends = await consumer.end_offsets(tps)
                    break
                except KafkaError:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.2)
            for tp in tps:
                consumer.seek(tp, ends[tp])
        yield consumer
    finally:
        await consumer.stop()


def _json(value: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(value)
    return doc


async def collect(
    consumer: AIOKafkaConsumer,
    *,
    until: int,
    timeout_s: float,
    settle_s: float = 0.0,
    opener: Callable[[bytes], dict[str, Any]] = _json,
    split: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Read records until ``until`` documents arrived (then ``settle_s`` more, for extras).

    ``opener`` turns a record into a document: plain JSON by default; a partner passes one
    that opens its sealed deliveries (see ``services/broker/pipeline/seal.py``). ``split``
    turns a document into several (``services.decision_records.split_decisions``: a folded
    decision record into each partner's decision)."""
    got: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    settle_end: float | None = None
    while loop.time() < deadline:
        if settle_end is None and len(got) >= until:
            settle_end = loop.time() + settle_s
        if settle_end is not None and loop.time() >= settle_end:
            break
        batch = await consumer.getmany(timeout_ms=100)
        for records in batch.values():
            for r in records:
                if r.value is not None:
                    doc = opener(r.value)
                    got.extend(split(doc) if split is not None else [doc])
    return got
