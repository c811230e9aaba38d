"""The partner's Kafka topic as a ``Source``: ``read_committed``, the partner's own consumer
group, offsets committed only after the handler succeeded (never automatically)."""

from __future__ import annotations

import json

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.kafka.client import KafkaConn
from services.sdk.source import RawItem


def _delivery_id(value: bytes, fallback: str) -> str:
    try:
        doc = json.loads(value)
    except ValueError:
        return fallback
    if isinstance(doc, dict):
        for name in ("delivery_id", "id"):
            if isinstance(doc.get(name), str):
                return str(doc[name])
    return fallback


class KafkaFeed:
    def __init__(
        self, conn: KafkaConn, *, topic: str, group_id: str, **consumer_options: object
    ) -> None:
        self._topic = topic
        self._consumer = AIOKafkaConsumer(
            topic,
            **conn.kwargs(),
            group_id=group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            **consumer_options,
        )
        self._started = False

    async def _start(self) -> None:
        if not self._started:
            await self._consumer.start()
            self._started = True

    async def fetch(self, *, wait_s: float) -> list[RawItem]:
        await self._start()
        batch = await self._consumer.getmany(timeout_ms=int(max(wait_s, 0) * 1000))
        items = []
        for records in batch.values():
            for r in records:
                if r.value is None:
                    continue
                tp = TopicPartition(r.topic, r.partition)
                did = _delivery_id(r.value, f"{r.partition}:{r.offset}")
                items.append(RawItem(did, r.value, (tp, r.offset)))
        return items

    async def ack(self, item: RawItem) -> None:
        tp, offset = item.token
        await self._consumer.commit({tp: offset + 1})

    async def reset(self) -> None:
        if not self._started:
            return
        for tp in self._consumer.assignment():
            offset = await self._consumer.committed(tp)
            if offset is None or offset < 0:  # nothing acknowledged yet: from the start
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)

    async def close(self) -> None:
        if self._started:
            await self._consumer.stop()
            self._started = False
