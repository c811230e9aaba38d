"""Inbound events sealed to their survivor (format ib1): the pure format, stage 1 (unseal),
the seal/event agreement in validate, and the relay's poll over sealed records."""

from __future__ import annotations

import json
import os
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from services.atrest.envelope import Unreadable
from services.atrest.sealed import (
    EVENT,
    Header,
    Sealed,
    event_header,
    open_record,
    parse,
    private_key,
    public_key,
    seal,
)
from services.broker.pipeline.model import InboundEvent, Rejection
from services.broker.pipeline.unseal import Keys, Unsealed, unseal_all
from services.broker.pipeline.validate import SchemaRegistry, validate
from services.broker.survivor_keys import StaticSurvivorKeys
from tests.support.pipeline import NOW
from tests.unit.test_relay_process import SNAPSHOT, Msg, RecordingPolicy, event, only, relay

DEK, OTHER_DEK = os.urandom(32), os.urandom(32)
HEADER = event_header("harbor-outreach", "sv-1", 1)
LIMIT = 256 * 1024


def sealed(raw: bytes, header: Header = HEADER, dek: bytes = DEK) -> bytes:
    return seal(raw, header, public_key=public_key(dek))


def parsed(record: bytes) -> Sealed:
    result = parse(record, EVENT)
    assert result is not None
    return result


def unseal(record: bytes, keys: Keys, *, required: bool, max_bytes: int) -> Unsealed | Rejection:
    """Stage 1 over a poll of one record, with ``keys`` as the poll's keys."""
    (result,) = unseal_all([record], lambda _: keys, required=required, max_bytes=max_bytes)
    return result


def test_a_sealed_event_opens_byte_for_byte_and_shows_nothing_in_clear() -> None:
    raw = event(1)
    record = sealed(raw)
    assert b"survivor_name" not in record and b'"age"' not in record
    assert parsed(record).header == HEADER
    assert open_record(parsed(record), private_key(DEK)) == raw


def test_the_key_pair_is_derived_from_the_dek_and_differs_per_dek() -> None:
    assert public_key(DEK) == public_key(DEK)
    assert public_key(DEK) != public_key(OTHER_DEK)
    assert public_key(DEK) != DEK  # the DEK itself is never the key


@pytest.mark.parametrize(
    "edit",
    [
        {"survivor": "sv-2"},
        {"agency": "lighthouse-shelter"},
        {"generation": 2},
    ],
)
def test_a_record_whose_header_was_edited_does_not_open(edit: dict[str, Any]) -> None:
    doc = json.loads(sealed(event(1)))
    doc.update(edit)
    record = json.dumps(doc).encode()
    edited = parse(record, EVENT)
    assert edited is not None and edited.header != HEADER
    with pytest.raises(Unreadable):
        open_record(edited, private_key(DEK))


def test_another_survivors_key_and_an_altered_ciphertext_do_not_open() -> None:
    record = sealed(event(1))
    with pytest.raises(Unreadable):
        open_record(parsed(record), private_key(OTHER_DEK))
    doc = json.loads(record)
    hpke = doc["hpke"]
    doc["hpke"] = hpke[:-6] + ("A" if hpke[-6] != "A" else "B") + hpke[-5:]
    with pytest.raises(Unreadable):
        open_record(parsed(json.dumps(doc).encode()), private_key(DEK))


def test_plaintext_is_no_sealed_record_and_a_broken_header_is_unreadable() -> None:
    assert parse(event(1), EVENT) is None
    assert parse(b"\x00garbage", EVENT) is None
    with pytest.raises(Unreadable):
        parse(b'{"accordsealed":"ib1","agency":"a","survivor":"s"}', EVENT)
    with pytest.raises(Unreadable):
        parse(b'{"accordsealed":"ib9","agency":"a","survivor":"s","generation":1}', EVENT)


KEYS: Keys = {HEADER.key: private_key(DEK)}


def code(result: Unsealed | Rejection) -> str:
    assert isinstance(result, Rejection)
    assert result.agency_id is None  # nothing in an unopened record is verified
    return result.code


def test_unseal_opens_with_the_poll_keys_and_names_who_it_was_sealed_for() -> None:
    raw = event(1)
    result = unseal(sealed(raw), KEYS, required=True, max_bytes=LIMIT)
    assert result == Unsealed(raw, ("harbor-outreach", "sv-1"))
    asked: list[set[tuple[str, int]]] = []

    def fetch(wanted: set[tuple[str, int]]) -> Keys:
        asked.append(wanted)
        return KEYS

    unseal_all([sealed(raw), raw, b"junk"], fetch, required=True, max_bytes=LIMIT)
    assert asked == [{("sv-1", 1)}]  # one key query for the poll, for its sealed records


def test_plaintext_is_refused_when_sealing_is_required_and_passes_when_optional() -> None:
    raw = event(1)
    assert code(unseal(raw, KEYS, required=True, max_bytes=LIMIT)) == "unsealed"
    assert unseal(raw, KEYS, required=False, max_bytes=LIMIT) == Unsealed(raw, None)


def test_an_erased_key_drops_the_event_and_a_missing_key_is_unreadable() -> None:
    record = sealed(event(1))
    assert code(unseal(record, {HEADER.key: None}, required=True, max_bytes=LIMIT)) == "erased"
    assert code(unseal(record, {}, required=True, max_bytes=LIMIT)) == "unreadable"
    other = {HEADER.key: private_key(OTHER_DEK)}
    assert code(unseal(record, other, required=True, max_bytes=LIMIT)) == "unreadable"


def test_an_oversized_sealed_record_is_refused_before_opening() -> None:
    record = sealed(b"x" * 3000)
    assert code(unseal(record, KEYS, required=True, max_bytes=1000)) == "oversized"
    assert isinstance(unseal(record, KEYS, required=True, max_bytes=3000), Unsealed)


def test_validate_refuses_an_event_sealed_as_another_survivor_or_agency(
    schemas: SchemaRegistry,
) -> None:
    raw = event(1)  # harbor-outreach about sv-1

    def check(sealed_for: tuple[str, str]) -> InboundEvent | Rejection:
        return validate(
            raw,
            schemas=schemas,
            agency_keys=SNAPSHOT.agency_keys,
            max_bytes=LIMIT,
            now=NOW,
            sealed_for=sealed_for,
        )

    assert isinstance(check(("harbor-outreach", "sv-1")), InboundEvent)
    for other in (("harbor-outreach", "sv-2"), ("lighthouse-shelter", "sv-1")):
        rejected = check(other)
        assert isinstance(rejected, Rejection) and rejected.code == "seal_mismatch"


async def test_the_relay_opens_sealed_records_and_drops_those_of_an_erased_survivor(
    schemas: SchemaRegistry,
) -> None:
    erased = event_header("harbor-outreach", "sv-2", 1)
    keys = StaticSurvivorKeys({HEADER.key: private_key(DEK), erased.key: None})
    r = relay(RecordingPolicy(), schemas, keys=keys)
    tp = TopicPartition("in", 0)
    batch = {
        tp: [
            Msg(0, sealed(event(1))),
            Msg(1, sealed(event(2), erased)),
            Msg(2, event(3)),  # plaintext
        ]
    }
    result = only(await r.process(cast(Any, batch), SNAPSHOT))
    dead = [json.loads(x.value)["code"] for x in result.records if x.topic == "dlq"]
    assert dead == ["erased", "unsealed"]
    assert result.events == 1 and result.deliveries == 2
    delivered_to = sorted(x.topic for x in result.records if x.topic.startswith("p."))
    assert delivered_to == ["p.lighthouse-shelter", "p.northside-clinic"]
