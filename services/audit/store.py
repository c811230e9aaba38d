"""The audit chain in SQL: append (serialised, signed), read back, verify, prune.

Every append runs in the caller's transaction: it first updates the single ``audit_head`` row
(a row lock on PostgreSQL, the write lock on SQLite), so appenders queue one behind another;
then it reads the head's seq and hash in that same transaction, skips an entry whose key is
already in the chain (a redelivered decision record), links the new entry to the head and
signs it with the appender key (``session.info["audit_appender"]``, set by
``with_appender``; else the process's configured one).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.audit import chain
from services.audit.models import AuditEntry, AuditHead
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


@lru_cache(maxsize=1)
def _configured_appender() -> SigningKey:
    from services.audit.signing import appender_key
    from services.settings import Settings

    return appender_key(Settings())


def with_appender(sessions: sessionmaker[Session], key: SigningKey) -> sessionmaker[Session]:
    """``sessions`` whose appends are signed with ``key``."""
    info = dict(sessions.kw.get("info") or {})
    info["audit_appender"] = key
    sessions.configure(info=info)
    return sessions


def _appender(session: Session) -> SigningKey:
    key = session.info.get("audit_appender")
    return key if isinstance(key, SigningKey) else _configured_appender()


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
        signature=chain.sign_entry(_appender(session), h),
        **chain.index(kind, doc),
    )
    session.add(entry)
    head.seq, head.hash = entry.seq, h
    session.flush()
    return entry


def append_decision(session: Session, record: Mapping[str, Any]) -> AuditEntry | None:
    key = chain.decision_key(str(record["event_id"]), str(record["partner_id"]))
    return append(session, "decision", key, record)


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
        signature=row.signature,
    )


def iter_entries(
    session: Session, after: int = -1, through: int | None = None
) -> Iterator[chain.Entry]:
    """The entries after ``after`` (up to ``through``) in seq order, fetched in chunks by
    keyset (never all in memory)."""
    while True:
        query = select(AuditEntry).where(AuditEntry.seq > after)
        if through is not None:
            query = query.where(AuditEntry.seq <= through)
        rows = list(session.scalars(query.order_by(AuditEntry.seq).limit(CHUNK)))
        for row in rows:
            yield as_entry(row)
        if len(rows) < CHUNK:
            return
        after = rows[-1].seq
        session.expunge_all()


def verify_database(
    sessions: sessionmaker[Session],
    witnessed: Iterable[chain.Checkpoint],
    checkpoint_key: VerifyKey | None,
    appender_key: VerifyKey | None,
) -> chain.VerifyReport:
    """The database's chain against the witnessed checkpoints (never the database's own word
    on what was pruned or signed)."""
    records = list(witnessed)
    with sessions() as session:
        verifier = chain.Verifier(appender_key, chain.witnessed_through(records, checkpoint_key))
        for entry in iter_entries(session):
            verifier.feed(entry)
        report = verifier.finish(records, checkpoint_key)
    metrics.AUDIT_CHAIN_OK.set(1 if report.ok else 0)  # /metrics of the verifying process
    metrics.AUDIT_CHAIN_VERIFIED.set_to_current_time()
    return report


def head(session: Session) -> tuple[int, str]:
    row = session.get(AuditHead, HEAD_ID)
    return (row.seq, row.hash) if row is not None else (0, chain.GENESIS)


def prunable(session: Session, *, before: datetime, after: int, limit: int) -> int | None:
    """The last seq retention may prune: the oldest entries after ``after`` whose time is
    before ``before``, only as a prefix (a hole would break the links), at most ``limit``
    (the last verified and witnessed seq, below the head). None if there is none."""
    through = None
    for seq, at in session.execute(
        select(AuditEntry.seq, AuditEntry.at)
        .where(AuditEntry.seq > after, AuditEntry.seq <= limit)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=CHUNK)
    ):
        if at is None or at >= before:
            break
        through = seq
    return through


def delete_through(session: Session, through: int) -> int:
    """Delete the entries up to ``through`` once their pruning is witnessed."""
    h = _lock_head(session)
    result = session.execute(delete(AuditEntry).where(AuditEntry.seq <= through))
    h.pruned_through = max(h.pruned_through or 0, through)
    return int(getattr(result, "rowcount", 0) or 0)


def entry_hash_at(session: Session, seq: int) -> str | None:
    return session.scalar(select(AuditEntry.entry_hash).where(AuditEntry.seq == seq))
