"""Safe-contact preferences (sealed) and the outbox of notices to survivors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime


class ContactPreference(Base):
    """One per survivor. ``preference`` is the whole ContactPreferenceIn as JSON, sealed with
    the survivor's data key (services/atrest): channels, safe times and the code word all say
    something about the survivor's life."""

    __tablename__ = "contact_preferences"

    survivor_id: Mapped[str] = mapped_column(ForeignKey("survivors.id"), primary_key=True)
    preference: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(128))


class SurvivorNotice(Base):
    """The outbox: every notice to a survivor, or asking someone to contact them, is a row here
    first (``services.contact.gate.enqueue``) and leaves only through the gate's dispatcher."""

    __tablename__ = "survivor_notices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # What makes it the same notice: enqueuing it twice keeps one row (exactly once).
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    survivor_id: Mapped[str] = mapped_column(ForeignKey("survivors.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    # Ids only (a consent id, a declaration id): never a value of an event or a consent.
    about: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    channel: Mapped[str | None] = mapped_column(String(16), default=None)
    reason: Mapped[str | None] = mapped_column(String(32), default=None)
