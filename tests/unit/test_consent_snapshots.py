"""Consent snapshots sealed to their survivor (format cs1): the format, how the relay's view
opens them, fails closed on one it cannot open, and never skips a change it could not apply."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition

from services.atrest.envelope import Unreadable
from services.atrest.sealed import Sealed, private_key, public_key, seal, snapshot_header
from services.broker.consent_view import KafkaConsentView, open_change, read
from services.broker.pipeline.unseal import Keys
from services.broker.registry import RegistryUnavailable
from services.broker.survivor_keys import StaticSurvivorKeys
from services.kafka.client import KafkaConn
from services.kafka.compacted import ViewUnavailable

DEK = os.urandom(32)
KEYS: Keys = {("sv-1", 1): private_key(DEK)}
CONSENT = {"id": "c-1", "version": 1, "status": "active", "provisions": []}


def payload(seq: int = 1, consents: list[Any] | None = None) -> bytes:
    doc = {
        "survivor_id": "sv-1",
        "seq": seq,
        "consents": [CONSENT] if consents is None else consents,
    }
    return json.dumps(doc).encode()


def sealed(data: bytes, survivor: str = "sv-1", generation: int = 1, dek: bytes = DEK) -> bytes:
    return seal(data, snapshot_header(survivor, generation), public_key=public_key(dek))


def change(key: bytes, value: bytes | None, keys: Keys, *, required: bool) -> object:
    """One record as the view opens it: parsed, then opened with the batch's keys."""
    parsed = read(value) if value is not None else None
    return open_change(key, value, parsed, keys, required=required)


def test_a_sealed_snapshot_holds_only_ids_and_opens_with_the_survivors_key() -> None:
    record = sealed(payload())
    assert b"c-1" not in record and b"provisions" not in record
    parsed = read(record)
    assert isinstance(parsed, Sealed) and parsed.header.key == ("sv-1", 1)
    assert change(b"sv-1", record, KEYS, required=True) == payload()


def test_tombstones_pass_and_plaintext_is_refused_unless_optional() -> None:
    assert change(b"sv-1", None, KEYS, required=True) is None
    assert isinstance(change(b"sv-1", payload(), KEYS, required=True), Unreadable)
    assert change(b"sv-1", payload(), KEYS, required=False) == payload()


def test_a_snapshot_under_another_survivors_key_or_an_erased_key_does_not_open() -> None:
    record = sealed(payload())
    # Replayed under another survivor's Kafka key: refused before any key is tried.
    assert isinstance(change(b"sv-2", record, KEYS, required=True), Unreadable)
    assert isinstance(change(b"sv-1", record, {("sv-1", 1): None}, required=True), Unreadable)
    assert isinstance(change(b"sv-1", record, {}, required=True), Unreadable)
    other = {("sv-1", 1): private_key(os.urandom(32))}
    assert isinstance(change(b"sv-1", record, other, required=True), Unreadable)
    doc = json.loads(record)
    doc["generation"] = 2  # an edited header does not open even with the right key
    edited = json.dumps(doc).encode()
    both = {**KEYS, ("sv-1", 2): KEYS["sv-1", 1]}
    assert isinstance(change(b"sv-1", edited, both, required=True), Unreadable)


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    offset: int = 0


def view(keys: Any) -> KafkaConsentView:
    return KafkaConsentView(KafkaConn("localhost:1", "relay", "unused", ""), "t", keys=keys)


async def test_the_view_applies_what_opens_and_forgets_a_survivor_whose_snapshot_does_not() -> None:
    v = view(StaticSurvivorKeys(KEYS))
    v.apply_all([Rec(b"sv-1", sealed(payload()))])
    assert v.consents_for("sv-1") == [CONSENT]
    # The next snapshot cannot be read (its key was erased): fail closed, assume nothing.
    v.apply_all([Rec(b"sv-1", sealed(payload(seq=2), generation=2))])
    assert v.consents_for("sv-1") == []


class DownKeys:
    def private_keys(self, wanted: Iterable[tuple[str, int]]) -> Keys:
        raise RegistryUnavailable("OperationalError")


class FakeConsumer:
    """Serves one partition's records once, as getmany does, and records seeks."""

    def __init__(self, tp: TopicPartition, records: list[Rec]) -> None:
        self.tp, self.records, self.pos, self.seeks = tp, records, 0, list[int]()

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {self.tp: len(self.records)}

    async def position(self, tp: TopicPartition) -> int:
        return self.pos

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Rec]]:
        batch, self.pos = self.records[self.pos :], len(self.records)
        return {self.tp: batch}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.pos = offset


async def test_a_batch_that_cannot_be_opened_now_is_read_again_not_skipped() -> None:
    tp = TopicPartition("t", 0)
    v = view(DownKeys())
    consumer = FakeConsumer(tp, [Rec(b"sv-1", sealed(payload()), 0)])
    v._consumer, v._partitions = consumer, [tp]
    with pytest.raises(ViewUnavailable):
        await v.catch_up()
    assert consumer.seeks == [0] and consumer.pos == 0  # the change is still ahead
    v._keys = StaticSurvivorKeys(KEYS)  # the database is back
    await v.catch_up()
    assert v.consents_for("sv-1") == [CONSENT]
