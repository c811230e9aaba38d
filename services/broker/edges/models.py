"""The table of the broker's edges: inbound records the relay dead-lettered (rejections)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime


class RejectedEvent(Base):
    """An inbound record the relay dead-lettered: why, never what it contained.

    One row per inbound record (unique position), so a redelivered dead letter is stored once.
    ``agency_id`` is the agency the record claimed to come from: it learns of events rejected
    in its name, including ones someone else forged.
    """

    __tablename__ = "rejected_events"
    __table_args__ = (UniqueConstraint("inbound_topic", "inbound_partition", "inbound_offset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agency_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    event_id: Mapped[str | None] = mapped_column(String(256), default=None)
    code: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(2000))
    inbound_topic: Mapped[str] = mapped_column(String(255))
    inbound_partition: Mapped[int] = mapped_column(Integer)
    inbound_offset: Mapped[int] = mapped_column(BigInteger)
    rejected_at: Mapped[datetime] = mapped_column(UTCDateTime())
