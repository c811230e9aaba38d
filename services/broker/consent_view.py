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
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from aiokafka import ConsumerRecord

from services.atrest import sealed
from services.atrest.envelope import Unreadable
from services.broker.pipeline.model import JSON, SurvivorFacts
from services.broker.registry import RegistryUnavailable
from services.kafka.client import KafkaConn
from services.kafka.compacted import CompactedTable, ViewUnavailable

if TYPE_CHECKING:
    from services.broker.pipeline.unseal import Keys
    from services.broker.survivor_keys import SurvivorKeys

log = logging.getLogger("accord.consent.view")


# The view could not be brought up to date; deciding now could miss a revocation.
ConsentViewUnavailable = ViewUnavailable


class ConsentView(Protocol):
    async def catch_up(self) -> None: ...

    def facts_for(self, survivor_id: str) -> SurvivorFacts: ...


class _Records:
    _state: dict[str, tuple[int, JSON]]

    def facts_for(self, survivor_id: str) -> SurvivorFacts:
        held = self._state.get(survivor_id)
        return SurvivorFacts.of(held[1]) if held else SurvivorFacts()

    def consents_for(self, survivor_id: str) -> Sequence[JSON]:
        return list(self.facts_for(survivor_id).consents)


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


def read(value: bytes) -> sealed.Sealed | Unreadable | None:
    """A snapshot record parsed once (None: not sealed), or why it cannot be."""
    try:
        return sealed.parse(value, sealed.SNAPSHOT)
    except Unreadable as exc:
        return exc


def open_change(
    key: bytes | None,
    value: bytes | None,
    parsed: sealed.Sealed | Unreadable | None,
    keys: Keys,
    *,
    required: bool,
) -> bytes | Unreadable | None:
    """The plaintext snapshot of one record (None for a tombstone), or why it cannot be read.

    A snapshot is sealed to its survivor (services/atrest/sealed.py, cs1); ``parsed`` is
    ``read(value)``; ``keys`` holds the private keys of the batch, None for an erased one."""
    if value is None:
        return None
    if isinstance(parsed, Unreadable):
        return parsed
    if parsed is None:
        return Unreadable("an unsealed consent snapshot") if required else value
    if key is None or parsed.header.survivor_id != key.decode(errors="replace"):
        return Unreadable("a consent snapshot sealed for another survivor than its key")
    private = keys.get(parsed.header.key)
    if private is None:
        return Unreadable("a consent snapshot whose survivor key is erased or unknown")
    try:
        return sealed.open_record(parsed, private)
    except Unreadable as exc:
        return exc


class KafkaConsentView(CompactedTable, _Records):
    def __init__(
        self,
        conn: KafkaConn,
        topic: str,
        *,
        keys: SurvivorKeys,
        required: bool = True,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(conn, topic, timeout_s=timeout_s)
        self._state = {}
        self._keys = keys
        self._required = required

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        apply_change(self._state, key, value)

    async def apply_fetched(self, records: list[ConsumerRecord]) -> None:
        # The batch's key query runs in a thread; only one catch_up runs at a time (the relay
        # awaits it before deciding), so the state is never read while it changes.
        await asyncio.to_thread(self.apply_all, records)

    def apply_all(self, records: list[ConsumerRecord]) -> None:
        parsed = [read(rec.value) if rec.value is not None else None for rec in records]
        wanted = {p.header.key for p in parsed if isinstance(p, sealed.Sealed)}
        try:  # one query for the batch's keys, dropped with it
            keys = self._keys.private_keys(wanted) if wanted else {}
        except RegistryUnavailable as exc:
            raise ViewUnavailable("the survivor keys could not be read") from exc
        for rec, p in zip(records, parsed, strict=True):
            opened = open_change(rec.key, rec.value, p, keys, required=self._required)
            if not isinstance(opened, Unreadable):
                try:
                    self.apply(rec.key, opened)
                    continue
                except ValueError:  # optional sealing: a plaintext record that is not JSON
                    opened = Unreadable("a consent snapshot that is not JSON")
            self._forget(rec.key, opened)

    def _forget(self, key: bytes | None, why: Unreadable) -> None:
        """Fail closed: no consent, declaration or court order is assumed for this survivor
        until a snapshot that opens arrives (an erasure republishes one)."""
        survivor = (key or b"").decode(errors="replace")
        log.warning(
            "consent snapshot unreadable", extra={"survivor_id": survivor, "reason": str(why)}
        )
        self._state.pop(survivor, None)
