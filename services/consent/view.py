"""The relay's view of consents, kept from the compacted consent-changes topic.

Each record is keyed by survivor id and holds that survivor's complete current sharing
state: consents, imminent-danger declarations (R8) and court orders (R9); a tombstone means
none. Before every batch the relay calls ``catch_up``, which
reads up to the topic's end as it stands at that moment: every change committed before the
batch is processed is seen by it (R3), and no cached consent outlives its revocation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from services.compacted import CompactedTable, ViewUnavailable
from services.kafka_client import KafkaConn

JSON = dict[str, Any]


# The view could not be brought up to date; deciding now could miss a revocation.
ConsentViewUnavailable = ViewUnavailable


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


class KafkaConsentView(CompactedTable, _Records):
    def __init__(self, conn: KafkaConn, topic: str, *, timeout_s: float = 5.0) -> None:
        super().__init__(conn, topic, timeout_s=timeout_s)
        self._state = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        apply_change(self._state, key, value)
