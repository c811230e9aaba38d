"""The relay's view of consents, kept from the compacted consent-changes topic.

Each record is keyed by survivor id and holds that survivor's complete current sharing
state: consents, imminent-danger declarations (R8) and court orders (R9); a tombstone means
none. Before every batch the relay calls ``catch_up``, which
reads up to the topic's end as it stands at that moment: every change committed before the
batch is processed is seen by it (R3), and no cached consent outlives its revocation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import ConsumerRecord

from services.atrest import snapshots
from services.atrest.envelope import Unreadable
from services.broker.registry import RegistryUnavailable
from services.compacted import CompactedTable, ViewUnavailable
from services.kafka_client import KafkaConn

if TYPE_CHECKING:
    from services.broker.inbound_keys import InboundKeys
    from services.broker.pipeline.unseal import Keys

JSON = dict[str, Any]
log = logging.getLogger("accord.consent.view")


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


def open_change(
    key: bytes | None, value: bytes | None, keys: Keys, *, required: bool
) -> bytes | Unreadable | None:
    """The plaintext snapshot of one record (None for a tombstone), or why it cannot be read.

    A snapshot is sealed to its survivor (services/atrest/snapshots.py); ``keys`` holds the
    private keys of the batch, None for an erased one."""
    if value is None:
        return None
    try:
        header = snapshots.read_header(value)
    except Unreadable as exc:
        return exc
    if header is None:
        return Unreadable("an unsealed consent snapshot") if required else value
    if key is None or header[0] != key.decode(errors="replace"):
        return Unreadable("a consent snapshot sealed for another survivor than its key")
    private = keys.get(header)
    if private is None:
        return Unreadable("a consent snapshot whose survivor key is erased or unknown")
    try:
        return snapshots.open_snapshot(value, private)
    except Unreadable as exc:
        return exc


class KafkaConsentView(CompactedTable, _Records):
    def __init__(
        self,
        conn: KafkaConn,
        topic: str,
        *,
        keys: InboundKeys,
        required: bool = True,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(conn, topic, timeout_s=timeout_s)
        self._state = {}
        self._keys = keys
        self._required = required

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        apply_change(self._state, key, value)

    def apply_all(self, records: list[ConsumerRecord]) -> None:
        wanted = set()
        for rec in records:
            try:
                header = snapshots.read_header(rec.value) if rec.value is not None else None
            except Unreadable:
                header = None
            if header is not None:
                wanted.add(header)
        try:  # one query for the batch's keys, dropped with it
            keys = self._keys.private_keys(wanted) if wanted else {}
        except RegistryUnavailable as exc:
            raise ViewUnavailable("the survivor keys could not be read") from exc
        for rec in records:
            opened = open_change(rec.key, rec.value, keys, required=self._required)
            if isinstance(opened, Unreadable):
                # Fail closed: no consent, declaration or court order is assumed for this
                # survivor until a snapshot that opens arrives (an erasure republishes one).
                log.warning(
                    "consent snapshot unreadable",
                    extra={
                        "survivor_id": (rec.key or b"").decode(errors="replace"),
                        "reason": str(opened),
                    },
                )
                if rec.key is not None:
                    self._state.pop(rec.key.decode(errors="replace"), None)
                continue
            self.apply(rec.key, opened)
