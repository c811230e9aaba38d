"""The relay's replay guard: which events (agency, event id) it has already relayed.

Every accepted event's key is written to a compacted topic in the same transaction as its
deliveries, so the guard survives restarts and is exactly as durable as the deliveries.
Keys older than the replay window are forgotten: events that old are refused as stale.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from services.kafka.client import KafkaConn
from services.kafka.compacted import CompactedTable


class Seen(Protocol):
    async def catch_up(self) -> None: ...

    def __contains__(self, key: object) -> bool: ...

    def remember(self, keys: Mapping[str, datetime]) -> None:
        """Keys this relay just committed to the seen topic (before its copy reads them)."""


class StaticSeen(set[str]):
    """An in-memory guard, for unit tests of pure logic."""

    async def catch_up(self) -> None:
        return None

    def remember(self, keys: Mapping[str, datetime]) -> None:
        self.update(keys)


class SeenEvents(CompactedTable):
    def __init__(self, conn: KafkaConn, topic: str, *, window: timedelta, timeout_s: float = 5.0):
        super().__init__(conn, topic, timeout_s=timeout_s)
        self._window = window
        self._seen: dict[str, datetime] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            self._seen.pop(key.decode(), None)
            return
        self._seen[key.decode()] = datetime.fromisoformat(json.loads(value)["time"])

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def remember(self, keys: Mapping[str, datetime]) -> None:
        self._seen.update(keys)

    def forget_before(self, now: datetime) -> None:
        limit = now - self._window - timedelta(days=1)
        for key in [k for k, t in self._seen.items() if t < limit]:
            del self._seen[key]


def seen_record(key: str, event_time: datetime) -> tuple[bytes, bytes]:
    return key.encode(), json.dumps({"time": event_time.isoformat()}).encode()
