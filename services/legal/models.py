"""Legal bases recorded by authorised agency staff: imminent danger (R8) and court orders (R9)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime


class Declaration(Base):
    __tablename__ = "declarations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    survivor_id: Mapped[str] = mapped_column(String(128), index=True)
    agency_id: Mapped[str] = mapped_column(String(64))
    declared_by: Mapped[str] = mapped_column(String(128))
    justification: Mapped[str] = mapped_column(Text)
    # False when telling the survivor would endanger them (R8).
    tell_survivor: Mapped[bool] = mapped_column(Boolean, default=True)
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ended_by: Mapped[str | None] = mapped_column(String(128), default=None)


class CourtOrder(Base):
    __tablename__ = "court_orders"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    survivor_id: Mapped[str] = mapped_column(String(128), index=True)
    agency_id: Mapped[str] = mapped_column(String(64))
    # The order's identity, sealed like the justification (services/atrest): never published.
    reference: Mapped[str] = mapped_column(Text)
    court: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(String(64))
    fields: Mapped[list[str]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    justification: Mapped[str] = mapped_column(Text)


class ReviewItem(Base):
    """Compliance review queue: legal-basis events awaiting review (R8, R9)."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # "imminent_danger" | "court_order"
    ref_id: Mapped[str] = mapped_column(String(64))
    agency_id: Mapped[str] = mapped_column(String(64))
    survivor_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    reviewed_by: Mapped[str | None] = mapped_column(String(128), default=None)
