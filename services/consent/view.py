"""The relay's view of consents, kept from the compacted consent-changes topic.

Each record is keyed by survivor id and holds that survivor's complete current sharing
state: consents, imminent-danger declarations (R8) and court orders (R9); a tombstone means
none. Before every batch the relay calls ``catch_up``, which
reads up to the topic's end as it stands at that moment: every change committed before the
batch is processed is seen by it (R3), and no cached consent outlives its revocation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.broker.topics import partitions

JSON = dict[str, Any]


class ConsentViewUnavailable(RuntimeError):
    """The view could not be brought up to date; deciding now could miss a revocation."""


class ConsentView(Protocol):
    async def catch_up(self) -> None: ...

    def consents_for(self, survivor_id: str) -> Sequence[JSON]: ...

    def declarations_for(self, survivor_id: str) -> Sequence[JSON]: ...

    def court_orders_for(self, survivor_id: str) -> Sequence[JSON]: ...


class _Records:
    _state: dict[str, tuple[int, JSON]]

    def _get(self, survivor_id: str, key: str) -> Sequence[JSON]:
        held = self._state.get(survivor_id)
        return list(held[1].get(key, [])) if held else []

    def consents_for(self, survivor_id: str) -> Sequence[JSON]:
        return self._get(survivor_id, "consents")

    def declarations_for(self, survivor_id: str) -> Sequence[JSON]:
        return self._get(survivor_id, "declarations")

    def court_orders_for(self, survivor_id: str) -> Sequence[JSON]:
        return self._get(survivor_id, "court_orders")


class StaticConsentView(_Records):
    """A fixed view, for unit tests of pure logic."""

    def __init__(self, by_survivor: dict[str, list[JSON]] | None = None) -> None:
        self._state = {k: (0, {"consents": v}) for k, v in (by_survivor or {}).items()}

    async def catch_up(self) -> None:
        return None


def apply_change(
    state: dict[str, tuple[int, JSON]], key: bytes | None, value: bytes | None
) -> None:
    """Apply one snapshot; an older ``seq`` than the one held (a raced publish) is ignored."""
    if key is None:
        return
    survivor = key.decode()
    if value is None:
        state.pop(survivor, None)
        return
    record = json.loads(value)
    seq = int(record.get("seq", 0))
    held = state.get(survivor)
    if held is None or seq >= held[0]:
        state[survivor] = (seq, record)


class KafkaConsentView(_Records):
    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 5.0) -> None:
        self._topic = topic
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._state = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self._consumer.start()
        parts = await partitions(self._bootstrap, self._topic)
        if not parts:
            await self._consumer.stop()
            raise ConsentViewUnavailable(f"topic {self._topic} does not exist")
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
                    for records in batch.values():
                        for rec in records:
                            apply_change(self._state, rec.key, rec.value)
        except TimeoutError as exc:
            raise ConsentViewUnavailable("consent view could not catch up in time") from exc

    async def _behind(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return True
        return False
