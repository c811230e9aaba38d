"""Seal and open survivor content through a database session; erase; re-wrap.

The KEK ring travels with the session (``session.info["kek_ring"]``, set by
``services.db.make_sessionmaker``); without one, the process's configured ring is used.
Unwrapped DEKs are kept only for the life of one session (one request or one batch), so an
erasure committed by any process takes effect at the next request everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.atrest import envelope, sealed
from services.atrest.envelope import KekRing, Unreadable
from services.atrest.models import SurvivorKey
from services.audit import record as audit

__all__ = [
    "SurvivorErased",
    "Unreadable",
    "erase",
    "open_text",
    "rewrap",
    "seal_inbound",
    "seal_snapshot",
    "seal_text",
    "status",
    "survivor_private_keys",
    "survivor_public_key",
]

_DEKS = "atrest_deks"  # session.info: {(survivor, generation): dek or None when erased}


class SurvivorErased(Exception):
    """The survivor's data was erased (``accord keys erase``): a tombstone. No new data key is
    made for them, so nothing new about them is sealed, accepted or shared (docs/at-rest.md)."""


@lru_cache(maxsize=1)
def _configured_ring() -> KekRing:
    from services.atrest.keys import kek_ring
    from services.settings import Settings

    return kek_ring(Settings())


def ring_of(session: Session) -> KekRing:
    ring = session.info.get("kek_ring")
    return ring if isinstance(ring, KekRing) else _configured_ring()


def _cache(session: Session) -> dict[tuple[str, int], bytes | None]:
    cache: dict[tuple[str, int], bytes | None] = session.info.setdefault(_DEKS, {})
    return cache


def _unwrap(session: Session, row: SurvivorKey) -> bytes | None:
    key = (row.survivor_id, row.generation)
    cache = _cache(session)
    if key not in cache:
        if row.wrapped_dek is None or row.kek_id is None:
            cache[key] = None
        else:
            cache[key] = ring_of(session).unwrap(
                row.kek_id, row.wrapped_dek, envelope.dek_context(row.survivor_id, row.generation)
            )
    return cache[key]


def _current(session: Session, survivor_id: str) -> tuple[int, bytes]:
    """The survivor's newest live DEK, created (generation 1) for a new survivor; raises
    ``SurvivorErased`` for an erased one."""
    # FOR SHARE: an erasure (FOR UPDATE) waits for this writer to commit, and a writer after
    # it sees the key erased, so nothing new is sealed with a key that is being destroyed.
    newest = session.scalars(
        select(SurvivorKey)
        .where(SurvivorKey.survivor_id == survivor_id)
        .order_by(SurvivorKey.generation.desc())
        .limit(1)
        .with_for_update(read=True)
    ).first()
    if newest is not None and newest.wrapped_dek is not None:
        dek = _unwrap(session, newest)
        assert dek is not None
        return newest.generation, dek
    if newest is not None:  # erased: a tombstone, never a fresh key made silently
        raise SurvivorErased(survivor_id)
    generation = 1
    ring, dek = ring_of(session), envelope.new_dek()
    # Writers for one survivor hold the survivor's row lock; the savepoint covers a writer
    # that does not (a concurrent first use): the loser reads the winner's key.
    try:
        with session.begin_nested():
            session.add(
                SurvivorKey(
                    survivor_id=survivor_id,
                    generation=generation,
                    kek_id=ring.active_id,
                    wrapped_dek=ring.active.wrap(
                        dek, envelope.dek_context(survivor_id, generation)
                    ),
                    created_at=datetime.now(UTC),
                )
            )
    except IntegrityError:
        return _current(session, survivor_id)
    _cache(session)[(survivor_id, generation)] = dek
    return generation, dek


def seal_text(session: Session, text: str, *, survivor_id: str, purpose: str, row: str) -> str:
    """``text`` sealed with the survivor's current DEK, bound to ``purpose`` and ``row``."""
    generation, dek = _current(session, survivor_id)
    return envelope.seal(
        dek, generation, text.encode(), survivor_id=survivor_id, purpose=purpose, row=row
    )


def open_text(
    session: Session, token: str, *, survivor_id: str, purpose: str, row: str
) -> str | None:
    """The text, or None when the survivor's key for it was erased.

    Raises ``Unreadable`` when the ciphertext was altered, moved, or its KEK is missing:
    that is tampering or misconfiguration, not an erasure, and must not pass silently.
    """
    generation = envelope.generation_of(token)
    key = (survivor_id, generation)
    cache = _cache(session)
    if key not in cache:
        row_key = session.get(SurvivorKey, key)
        if row_key is None:
            raise Unreadable("a ciphertext names a data key that does not exist")
        _unwrap(session, row_key)
    dek = cache[key]
    if dek is None:
        return None
    return envelope.open_sealed(
        dek, token, survivor_id=survivor_id, purpose=purpose, row=row
    ).decode()


def erase(session: Session, survivor_id: str, *, by: str, now: datetime) -> int:
    """Destroy every live DEK of the survivor (crypto-shredding), chained in the audit log in
    the same transaction; how many were destroyed."""

    rows = list(
        session.scalars(
            select(SurvivorKey)
            .where(SurvivorKey.survivor_id == survivor_id, SurvivorKey.wrapped_dek.is_not(None))
            .with_for_update()
        )
    )
    for row in rows:
        row.wrapped_dek, row.kek_id, row.erased_at = None, None, now
        _cache(session)[(survivor_id, row.generation)] = None
    if rows:
        audit.key_erasure(session, survivor_id, [r.generation for r in rows], by, now)
    return len(rows)


def is_erased(session: Session, survivor_id: str) -> bool:
    """Whether the survivor's keys were erased (every key row erased, at least one)."""
    rows = list(
        session.scalars(
            select(SurvivorKey.wrapped_dek).where(SurvivorKey.survivor_id == survivor_id)
        )
    )
    return bool(rows) and all(w is None for w in rows)


def rewrap(session: Session, *, limit: int) -> int:
    """Re-wrap up to ``limit`` DEKs that are not under the active KEK; how many were.

    The DEK itself does not change, so nothing sealed needs re-encrypting and readers never
    wait: before and after, the row unwraps (the old KEK stays in the ring until ``status``
    shows none left under it). Rows another rewrapper holds are skipped.
    """
    ring = ring_of(session)
    rows = list(
        session.scalars(
            select(SurvivorKey)
            .where(
                SurvivorKey.wrapped_dek.is_not(None),
                SurvivorKey.kek_id != ring.active_id,
            )
            .order_by(SurvivorKey.survivor_id, SurvivorKey.generation)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for row in rows:
        assert row.wrapped_dek is not None and row.kek_id is not None
        context = envelope.dek_context(row.survivor_id, row.generation)
        dek = ring.unwrap(row.kek_id, row.wrapped_dek, context)
        row.wrapped_dek, row.kek_id = ring.active.wrap(dek, context), ring.active_id
    return len(rows)


def status(session: Session) -> dict[str, int]:
    """Live DEKs per KEK id, and erased ones under ``"(erased)"``."""
    counts = session.execute(
        select(SurvivorKey.kek_id, func.count()).group_by(SurvivorKey.kek_id)
    ).all()
    return {kek_id or "(erased)": n for kek_id, n in counts}


def survivor_public_key(session: Session, survivor_id: str) -> tuple[int, bytes]:
    """The generation and X25519 public key records about the survivor are sealed to
    (``services.atrest.sealed``); creates the survivor's DEK on first use."""
    generation, dek = _current(session, survivor_id)
    return generation, sealed.public_key(dek)


def seal_inbound(session: Session, event: bytes, *, agency_id: str, survivor_id: str) -> bytes:
    """``event`` as the inbound record: sealed to the survivor's current key."""
    generation, key = survivor_public_key(session, survivor_id)
    header = sealed.event_header(agency_id, survivor_id, generation)
    return sealed.seal(event, header, public_key=key)


def seal_snapshot(session: Session, payload: bytes, *, survivor_id: str) -> bytes:
    """A consent snapshot as ``accord.consent.changes`` holds it: sealed to the survivor."""
    generation, key = survivor_public_key(session, survivor_id)
    return sealed.seal(payload, sealed.snapshot_header(survivor_id, generation), public_key=key)


def survivor_private_keys(
    session: Session, wanted: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], X25519PrivateKey | None]:
    """The private keys that open the wanted (survivor, generation) pairs, in one query;
    None for an erased key; a pair with no key row is left out."""
    wanted = set(wanted)
    if not wanted:
        return {}
    rows = session.scalars(
        select(SurvivorKey).where(SurvivorKey.survivor_id.in_({s for s, _ in wanted}))
    )
    keys: dict[tuple[str, int], X25519PrivateKey | None] = {}
    for row in rows:
        if (row.survivor_id, row.generation) in wanted:
            dek = _unwrap(session, row)
            keys[row.survivor_id, row.generation] = None if dek is None else sealed.private_key(dek)
    return keys
