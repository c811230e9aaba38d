from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime


class Credential(Base):
    """An API key: only its SHA-256 is stored; the secret is shown once at issue time."""

    __tablename__ = "credentials"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128), index=True)
    # The agency an advocate (or an agency's own key) acts for; scopes what it may see.
    agency_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
