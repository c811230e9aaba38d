"""Stage 2, validate: an opened record → an InboundEvent, or a Rejection with a reason code.

Checks, in order: size, JSON, the CloudEvents 1.0 envelope, that the publishing agency is
registered, its Ed25519 signature over the canonical event (so nobody publishes as another
agency or alters an event), that it names the agency and survivor it was sealed as, the
replay window and that the event id is new, and the event type's JSON Schema.
Never copies payload values into a rejection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import ValidationError

from services.broker.pipeline.model import InboundEvent, PollItem, Rejection
from services.events.cloudevents import CloudEvent
from services.events.provenance import SIGNATURE, verify_event

# Agencies' clocks may run a little ahead of the relay's.
CLOCK_SKEW = timedelta(minutes=5)


class SchemaRegistry:
    """JSON Schemas of event ``data``, one file per event type under ``schemas/events/``."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def known(self, event_type: str) -> bool:
        return self._validator(event_type) is not None

    def errors(self, event_type: str, data: Mapping[str, Any]) -> list[str]:
        if not self.known(event_type):
            return ["unknown event type"]  # never the type sent: it may be any text
        return [
            f"{'/'.join(map(str, path)) or '(data)'}: {keyword} violated"
            for path, keyword in self.problems(event_type, data)
        ]

    def problems(
        self, event_type: str, data: Mapping[str, Any]
    ) -> list[tuple[list[str | int], str]]:
        """Where the data of a known type is wrong and which keyword it violates, never the
        offending value."""
        validator = self._validator(event_type)
        if validator is None:
            return []
        return [
            (list(e.absolute_path), str(e.validator)) for e in validator.iter_errors(dict(data))
        ]

    def fields(self, event_type: str) -> list[str]:
        """The field names an event type's schema declares (for sample events)."""
        validator = self._validator(event_type)
        schema = validator.schema if validator else {}
        return sorted(schema.get("properties", {})) if isinstance(schema, Mapping) else []

    @lru_cache(maxsize=128)  # noqa: B019  (one registry per process; schemas are static)
    def _validator(self, event_type: str) -> Draft202012Validator | None:
        if "/" in event_type or event_type.startswith("."):
            return None
        path = self._dir / f"{event_type}.json"
        if not path.is_file():
            return None
        return Draft202012Validator(json.loads(path.read_text()))


def survivor_age(data: Mapping[str, Any], at: datetime) -> int | None:
    """Age at event time (R4, R5): from ``age`` if given, else from ``date_of_birth``."""
    age = data.get("age")
    if isinstance(age, int) and not isinstance(age, bool) and 0 <= age < 130:
        return age
    dob = data.get("date_of_birth")
    if isinstance(dob, str):
        try:
            born = date.fromisoformat(dob)
        except ValueError:
            return None
        day = at.date()
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return None


def validate(
    raw: bytes,
    *,
    schemas: SchemaRegistry,
    agency_keys: Mapping[str, str | None],
    max_bytes: int,
    seen: Callable[[str], bool] = lambda _key: False,
    now: datetime | None = None,
    max_age: timedelta = timedelta(days=7),
    sealed_for: tuple[str, str] | None = None,
) -> InboundEvent | Rejection:
    """Check one inbound record. ``agency_keys`` maps each registered agency to its Ed25519
    verify key; ``seen`` says whether an event key (``agency/event id``) was relayed before;
    ``sealed_for`` is the (agency, survivor) the record was sealed as (stage 1, unseal)."""
    parsed = _envelope(raw, max_bytes)
    if isinstance(parsed, Rejection):
        return parsed
    doc, envelope = parsed
    agency = envelope.agency_id
    if agency not in agency_keys:
        return Rejection("unknown_agency", "source is not a registered agency", envelope.id)
    if SIGNATURE not in doc:
        return Rejection("unsigned", "the event carries no agency signature", envelope.id, agency)
    if not verify_event(doc, agency_keys[agency]):
        return Rejection(
            "bad_signature", "the signature is not the source agency's", envelope.id, agency
        )
    if sealed_for is not None and sealed_for != (agency, envelope.subject):
        return Rejection(
            "seal_mismatch",
            "the seal names another agency or survivor than the event",
            envelope.id,
            agency,
        )
    if now is not None and not (now - max_age <= envelope.time <= now + CLOCK_SKEW):
        return Rejection("stale", "event time is outside the replay window", envelope.id, agency)
    if seen(event_key(agency, envelope.id)):
        return Rejection("replayed", "this event id was already relayed", envelope.id, agency)
    if not schemas.known(envelope.type):
        return Rejection(
            "unknown_type", f"unknown event type {envelope.type!r}", envelope.id, agency
        )
    problems = schemas.errors(envelope.type, envelope.data)
    if problems:
        return Rejection("schema", "; ".join(problems[:10]), envelope.id, agency)
    return InboundEvent(
        id=envelope.id,
        type=envelope.type,
        agency_id=agency,
        survivor_id=envelope.subject,
        time=envelope.time,
        data=dict(envelope.data),
        survivor_age=survivor_age(envelope.data, envelope.time),
    )


def _envelope(raw: bytes, max_bytes: int) -> tuple[Any, CloudEvent] | Rejection:
    """Size, JSON, and the CloudEvents 1.0 envelope: the document and its envelope."""
    if len(raw) > max_bytes:
        return Rejection("oversized", f"event is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return Rejection("malformed", "not a JSON document")
    try:
        return doc, CloudEvent.model_validate(doc)
    except ValidationError as exc:
        fields = sorted({".".join(map(str, e["loc"])) or "(envelope)" for e in exc.errors()})
        return Rejection("malformed", "invalid CloudEvents envelope at: " + ", ".join(fields))
    except RecursionError:
        return Rejection("malformed", "nesting too deep")


def validate_all(
    items: Sequence[PollItem],
    *,
    schemas: SchemaRegistry,
    agency_keys: Mapping[str, str | None],
    max_bytes: int,
    seen: Callable[[str], bool],
    now: datetime,
    max_age: timedelta,
) -> list[PollItem]:
    """The poll's opened items, each with its ``event`` or the ``rejection`` saying why not.

    One replay check for the whole poll: an event accepted earlier in it, on any partition,
    is ``replayed`` the second time, as is one ``seen`` says was relayed before."""
    accepted: set[str] = set()

    def relayed(key: str) -> bool:
        return key in accepted or seen(key)

    out: list[PollItem] = []
    for item in items:
        if item.opened is None:  # rejected by an earlier stage
            out.append(item)
            continue
        checked = validate(
            item.opened.event,
            schemas=schemas,
            agency_keys=agency_keys,
            max_bytes=max_bytes,
            seen=relayed,
            now=now,
            max_age=max_age,
            sealed_for=item.opened.sealed_for,
        )
        if isinstance(checked, Rejection):
            out.append(replace(item, rejection=checked))
        else:
            accepted.add(event_key(checked.agency_id, checked.id))
            out.append(replace(item, event=checked))
    return out


def event_key(agency_id: str, event_id: str) -> str:
    return f"{agency_id}/{event_id}"
