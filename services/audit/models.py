"""The audit store: the hash-chained, signed entries and the append lock. Checkpoints are
witnessed outside the database (services/audit/witness.py).

``record`` is the entry's canonical JSON (names, ids and times, never field values); the other
columns of ``AuditEntry`` are derived from it for search, and ``verify`` checks they agree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime


class AuditEntry(Base):
    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    # Unique: a decision's is decision:<event id>:<partner id>, so a redelivered record is
    # appended once.
    entry_key: Mapped[str] = mapped_column(String(400), unique=True)
    record: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
    # Derived from the record (services/audit/chain.py ``index``), for search.
    at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    event_id: Mapped[str | None] = mapped_column(String(256), index=True)
    partner_id: Mapped[str | None] = mapped_column(String(64))
    agency_id: Mapped[str | None] = mapped_column(String(64))
    partner_type: Mapped[str | None] = mapped_column(String(64))
    event_type: Mapped[str | None] = mapped_column(String(128))
    survivor_id: Mapped[str | None] = mapped_column(String(128), index=True)
    outcome: Mapped[str | None] = mapped_column(String(16))
    basis: Mapped[str] = mapped_column(String(400), default="")  # |consent|court_order|
    rules: Mapped[str] = mapped_column(String(400), default="")  # |R2|R6|
    # The appender's Ed25519 signature over the entry's hash (services/audit/chain.py).
    signature: Mapped[str | None] = mapped_column(String(128))


class AuditHead(Base):
    """One row (id 1), updated by every append: the lock that serialises appenders, and the
    seq retention pruned through (informative: verify trusts only the witnessed pruning)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    pruned_through: Mapped[int | None] = mapped_column(BigInteger, default=None)
