"""Stage 1, unseal: a poll's inbound records → the agencies' signed event bytes, or Rejections.

Inbound events are sealed to their survivor (``services.atrest.sealed``, format ib1). Each
record is parsed once; the keys the poll's records name are fetched in one call (I/O, given
by the relay) and each record is opened with its key. A key that was erased means the
survivor had their data destroyed: the event is dropped with a dead letter that says so,
never delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.atrest import sealed
from services.atrest.envelope import Unreadable
from services.broker.pipeline.model import PollItem, Rejection, Unsealed

__all__ = ["FetchKeys", "Keys", "Unsealed", "unseal", "unseal_all"]

Keys = Mapping[tuple[str, int], X25519PrivateKey | None]
FetchKeys = Callable[[set[tuple[str, int]]], Keys]


def unseal(
    items: Sequence[PollItem], fetch_keys: FetchKeys, *, required: bool, max_bytes: int
) -> list[PollItem]:
    """The poll's items, each ``opened`` or with the ``rejection`` saying why not."""
    opened = unseal_all(
        [item.record for item in items], fetch_keys, required=required, max_bytes=max_bytes
    )
    return [
        replace(item, rejection=o) if isinstance(o, Rejection) else replace(item, opened=o)
        for item, o in zip(items, opened, strict=True)
    ]


def unseal_all(
    records: Sequence[bytes], fetch_keys: FetchKeys, *, required: bool, max_bytes: int
) -> list[Unsealed | Rejection]:
    """Each record opened, or why not, in order."""
    parsed = [_parse(record, max_bytes) for record in records]
    wanted = {p.header.key for p in parsed if isinstance(p, sealed.Sealed)}
    keys = fetch_keys(wanted) if wanted else {}
    return [_open(r, p, keys, required=required) for r, p in zip(records, parsed, strict=True)]


def _parse(record: bytes, max_bytes: int) -> sealed.Sealed | Rejection | None:
    if len(record) > max_bytes + sealed.OVERHEAD_BYTES + max_bytes // 3:
        return Rejection("oversized", f"sealed record is {len(record)} bytes")
    try:
        return sealed.parse(record, sealed.EVENT)
    except Unreadable as exc:
        return Rejection("unreadable", str(exc))


def _open(
    record: bytes, parsed: sealed.Sealed | Rejection | None, keys: Keys, *, required: bool
) -> Unsealed | Rejection:
    if isinstance(parsed, Rejection):
        return parsed
    if parsed is None:
        if required:
            return Rejection("unsealed", "events must be sealed to their survivor (format ib1)")
        return Unsealed(record, None)
    header = parsed.header
    if header.key not in keys:
        return Rejection("unreadable", "sealed to a survivor key that does not exist")
    key = keys[header.key]
    if key is None:
        return Rejection("erased", "the survivor's key was erased; the event cannot be read")
    try:
        event = sealed.open_record(parsed, key)
    except Unreadable as exc:
        return Rejection("unreadable", str(exc))
    assert header.agency_id is not None  # parse() requires it of an event
    return Unsealed(event, (header.agency_id, header.survivor_id))
