"""Stage 2 (validate): every kind of bad inbound record is turned into a coded rejection."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from nacl.signing import SigningKey

from services.broker.pipeline.model import InboundEvent, Rejection
from services.broker.pipeline.validate import SchemaRegistry, survivor_age, validate
from services.events import provenance

KEY = SigningKey.generate()
AGENCIES = {"harbor-outreach": provenance.public_key_of(KEY)}
NOW = datetime(2026, 11, 24, 12, 5, tzinfo=UTC)


def envelope(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/agencies/harbor-outreach",
        "type": "accord.referral.made",
        "subject": "sv-1",
        "time": "2026-11-24T12:00:00Z",
        "data": {"survivor_name": "A", "age": 20, "service_needs": ["housing"]},
    }
    base.update(over)
    return base


def check(
    doc: Any,
    schemas: SchemaRegistry,
    max_bytes: int = 10_000,
    *,
    signed: bool = True,
    seen: frozenset[str] = frozenset(),
) -> InboundEvent | Rejection:
    if isinstance(doc, dict) and signed:
        doc = provenance.sign_event(doc, KEY)
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return validate(
        raw,
        schemas=schemas,
        agency_keys=AGENCIES,
        max_bytes=max_bytes,
        seen=seen.__contains__,
        now=NOW,
    )


def test_valid_event_passes_with_age(schemas: SchemaRegistry) -> None:
    event = check(envelope(), schemas)
    assert isinstance(event, InboundEvent)
    assert (event.agency_id, event.survivor_id, event.survivor_age) == (
        "harbor-outreach",
        "sv-1",
        20,
    )


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        (b"{not json", "malformed"),
        (envelope(specversion="0.3"), "malformed"),
        (envelope(time="2026-11-24T12:00:00"), "malformed"),  # no zone: ambiguous
        (envelope(source="/agencies/someone-else"), "unknown_agency"),
        (envelope(type="accord.nothing.known"), "unknown_type"),
        (envelope(data={"age": "twenty"}), "schema"),
    ],
)
def test_bad_events_are_rejected_with_a_code(doc: Any, code: str, schemas: SchemaRegistry) -> None:
    result = check(doc, schemas)
    assert isinstance(result, Rejection)
    assert result.code == code


def test_unsigned_event_is_rejected(schemas: SchemaRegistry) -> None:
    result = check(envelope(), schemas, signed=False)
    assert isinstance(result, Rejection) and result.code == "unsigned"


def test_event_signed_by_one_agency_claiming_another_is_rejected(schemas: SchemaRegistry) -> None:
    other = SigningKey.generate()
    keys = {**AGENCIES, "valley-school": provenance.public_key_of(other)}
    forged = provenance.sign_event(envelope(source="/agencies/valley-school"), KEY)
    result = validate(
        json.dumps(forged).encode(), schemas=schemas, agency_keys=keys, max_bytes=10_000
    )
    assert isinstance(result, Rejection) and result.code == "bad_signature"


def test_tampered_event_fails_its_signature(schemas: SchemaRegistry) -> None:
    signed = provenance.sign_event(envelope(), KEY)
    signed["data"] = {**signed["data"], "age": 21}
    result = check(json.dumps(signed).encode(), schemas)
    assert isinstance(result, Rejection) and result.code == "bad_signature"


def test_replayed_event_id_is_rejected(schemas: SchemaRegistry) -> None:
    result = check(envelope(), schemas, seen=frozenset({"harbor-outreach/evt-1"}))
    assert isinstance(result, Rejection) and result.code == "replayed"


@pytest.mark.parametrize("time", ["2026-11-01T00:00:00Z", "2026-11-24T13:00:00Z"])
def test_events_outside_the_replay_window_are_stale(time: str, schemas: SchemaRegistry) -> None:
    result = check(envelope(time=time), schemas)
    assert isinstance(result, Rejection) and result.code == "stale"


def test_oversized_event_is_rejected_before_parsing(schemas: SchemaRegistry) -> None:
    result = check(envelope(), schemas, max_bytes=50)
    assert isinstance(result, Rejection) and result.code == "oversized"


def test_rejection_never_echoes_field_values(schemas: SchemaRegistry) -> None:
    secret = "HIV-POSITIVE-SECRET"
    result = check(envelope(data={"age": secret}), schemas)
    assert isinstance(result, Rejection)
    assert secret not in result.detail


def test_path_like_event_types_are_unknown(schemas: SchemaRegistry) -> None:
    assert not schemas.known("../../etc/passwd")
    assert not schemas.known("accord/../x")


@pytest.mark.parametrize(
    ("data", "age"),
    [
        ({"age": 17}, 17),
        ({"date_of_birth": "2008-11-25"}, 17),  # turns 18 the day after the event
        ({"date_of_birth": "2008-11-24"}, 18),  # 18th birthday on the event day
        ({"age": True}, None),
        ({"date_of_birth": "not a date"}, None),
        ({}, None),
    ],
)
def test_survivor_age_at_event_time(data: dict[str, Any], age: int | None) -> None:
    assert survivor_age(data, datetime(2026, 11, 24, 9, 0, tzinfo=UTC)) == age
