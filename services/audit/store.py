"""The audit chain in SQL: append (serialised), checkpoint, read back, verify, prune.

Every append runs in the caller's transaction: it first updates the single ``audit_head`` row
(a row lock on PostgreSQL, the write lock on SQLite), so appenders queue one behind another;
then it reads the head's seq and hash in that same transaction, skips an entry whose key is
already in the chain (a redelivered decision record), and links the new entry to the head.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.audit import chain
from services.audit.models import AuditCheckpoint, AuditEntry, AuditHead
from services.observability import metrics

HEAD_ID = 1
CHUNK = 1000


def ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _lock_head(session: Session) -> AuditHead:
    session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(seq=AuditHead.seq))
    head = session.get(AuditHead, HEAD_ID, populate_existing=True)
    if head is None:  # a database made without the migration (SQLite create_all)
        head = AuditHead(id=HEAD_ID, seq=0, hash=chain.GENESIS)
        session.add(head)
        session.flush()
    return head


def append(session: Session, kind: str, key: str, record: Mapping[str, Any]) -> AuditEntry | None:
    """Append one entry in the caller's transaction; None if its key is already chained."""
    if kind not in chain.KINDS:
        raise ValueError(f"unknown audit entry kind {kind!r}")
    head = _lock_head(session)
    if session.scalar(select(AuditEntry.seq).where(AuditEntry.entry_key == key)) is not None:
        return None
    doc = json.loads(chain.canonical(dict(record)))  # exactly what is hashed
    h = chain.entry_hash(head.hash, kind, key, doc)
    entry = AuditEntry(
        seq=head.seq + 1,
        kind=kind,
        entry_key=key,
        record=chain.canonical(doc).decode(),
        prev_hash=head.hash,
        entry_hash=h,
        **chain.index(kind, doc),
    )
    session.add(entry)
    head.seq, head.hash = entry.seq, h
    session.flush()
    return entry


def append_decision(session: Session, record: Mapping[str, Any]) -> AuditEntry | None:
    key = chain.decision_key(str(record["event_id"]), str(record["partner_id"]))
    return append(session, "decision", key, record)


def checkpoint(session: Session, key: SigningKey, now: datetime) -> AuditCheckpoint | None:
    """Sign the current head, unless it is empty or already signed."""
    head = _lock_head(session)
    if head.seq == 0 or session.get(AuditCheckpoint, head.seq) is not None:
        return None
    cp = chain.sign_checkpoint(key, seq=head.seq, head=head.hash, count=head.seq, at=ts(now))
    row = AuditCheckpoint(
        seq=cp.seq,
        head=cp.head,
        count=cp.count,
        at=cp.at,
        key_id=cp.key_id,
        signature=cp.signature,
    )
    session.add(row)
    return row


def as_entry(row: AuditEntry) -> chain.Entry:
    columns = {
        "at": row.at,
        "event_id": row.event_id,
        "partner_id": row.partner_id,
        "agency_id": row.agency_id,
        "partner_type": row.partner_type,
        "event_type": row.event_type,
        "survivor_id": row.survivor_id,
        "outcome": row.outcome,
        "basis": row.basis,
        "rules": row.rules,
    }
    return chain.Entry(
        seq=row.seq,
        kind=row.kind,
        key=row.entry_key,
        record=json.loads(row.record),
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
        columns=columns,
    )


def as_checkpoint(row: AuditCheckpoint) -> chain.Checkpoint:
    return chain.Checkpoint(
        seq=row.seq,
        head=row.head,
        count=row.count,
        at=row.at,
        key_id=row.key_id,
        signature=row.signature,
    )


def iter_entries(session: Session) -> Iterator[chain.Entry]:
    """Every entry in seq order, fetched in chunks by keyset (never all in memory)."""
    after = -1
    while True:
        rows = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.seq > after)
                .order_by(AuditEntry.seq)
                .limit(CHUNK)
            )
        )
        for row in rows:
            yield as_entry(row)
        if len(rows) < CHUNK:
            return
        after = rows[-1].seq
        session.expunge_all()


def verify_database(sessions: sessionmaker[Session], verify_key: VerifyKey) -> chain.VerifyReport:
    with sessions() as session:
        head = session.get(AuditHead, HEAD_ID)
        verifier = chain.Verifier()
        for entry in iter_entries(session):
            verifier.feed(entry)
        cps = [as_checkpoint(r) for r in session.scalars(select(AuditCheckpoint))]
        report = verifier.finish(
            cps, verify_key, pruned_through=head.pruned_through if head else None
        )
    metrics.AUDIT_CHAIN_OK.set(1 if report.ok else 0)  # /metrics of the verifying process
    metrics.AUDIT_CHAIN_VERIFIED.set_to_current_time()
    return report


def prune(session: Session, key: SigningKey, *, before: datetime, now: datetime) -> int:
    """Retention: delete the oldest entries whose time is before ``before``, up to the last
    such entry, after signing a checkpoint there so the rest still verifies from it.

    Only a prefix of the chain can go (a hole would break the links); the first entry that
    must be kept stops the pruning. Returns how many entries were deleted.
    """
    head = _lock_head(session)
    start = (head.pruned_through or 0) + 1
    through = None
    for seq, at in session.execute(
        select(AuditEntry.seq, AuditEntry.at)
        .where(AuditEntry.seq >= start)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=CHUNK)
    ):
        if at is None or at >= before or seq == head.seq:
            break  # keep the last entry: the head is always a row
        through = seq
    if through is None:
        return 0
    last = session.get(AuditEntry, through)
    assert last is not None
    if session.get(AuditCheckpoint, through) is None:
        cp = chain.sign_checkpoint(
            key, seq=through, head=last.entry_hash, count=through, at=ts(now)
        )
        session.add(
            AuditCheckpoint(
                seq=cp.seq,
                head=cp.head,
                count=cp.count,
                at=cp.at,
                key_id=cp.key_id,
                signature=cp.signature,
            )
        )
    result = session.execute(delete(AuditEntry).where(AuditEntry.seq <= through))
    session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq < through))
    head.pruned_through = through
    return int(getattr(result, "rowcount", 0) or 0)
