"""Stage 0: an inbound record → the agency's signed event bytes, or a Rejection.

Inbound events are sealed to their survivor (``services.atrest.inbound``). The relay reads
the headers of a whole poll, fetches the keys they name in one query (I/O, in the relay), and
opens each record here (pure). A key that was erased means the survivor had their data
destroyed: the event is dropped with a dead letter that says so, never delivered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.atrest import inbound
from services.atrest.envelope import Unreadable
from services.broker.pipeline.model import Rejection

Keys = Mapping[tuple[str, int], X25519PrivateKey | None]


@dataclass(frozen=True)
class Unsealed:
    """An opened record: the event's bytes, and who the seal says it is from and about."""

    event: bytes
    sealed_for: tuple[str, str] | None  # (agency, survivor); None for a plaintext record


def header_of(record: bytes) -> inbound.Header | None:
    try:
        return inbound.read_header(record)
    except Unreadable:
        return None  # unseal() turns it into a rejection


def wanted(records: Iterable[bytes]) -> set[tuple[str, int]]:
    """The (survivor, generation) keys a poll's records need."""
    return {h.key for h in map(header_of, records) if h is not None}


def unseal(record: bytes, keys: Keys, *, required: bool, max_bytes: int) -> Unsealed | Rejection:
    if len(record) > max_bytes + inbound.OVERHEAD_BYTES + max_bytes // 3:
        return Rejection("oversized", f"sealed record is {len(record)} bytes")
    try:
        header = inbound.read_header(record)
    except Unreadable as exc:
        return Rejection("unreadable", str(exc))
    if header is None:
        if required:
            return Rejection("unsealed", "events must be sealed to their survivor (format ib1)")
        return Unsealed(record, None)
    if header.key not in keys:
        return Rejection("unreadable", "sealed to a survivor key that does not exist")
    key = keys[header.key]
    if key is None:
        return Rejection("erased", "the survivor's key was erased; the event cannot be read")
    try:
        event = inbound.open_event(record, header, key)
    except Unreadable as exc:
        return Rejection("unreadable", str(exc))
    return Unsealed(event, (header.agency_id, header.survivor_id))
