"""The wrapped per-survivor data keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime


class SurvivorKey(Base):
    """One generation of a survivor's data key, stored only wrapped by a KEK.

    Erasing sets ``wrapped_dek`` to NULL and ``erased_at``: what that generation sealed can
    no longer be read, by anyone. The row stays, so a read can say "erased" instead of
    failing. The next write for the survivor starts a new generation.
    """

    __tablename__ = "survivor_keys"

    survivor_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kek_id: Mapped[str | None] = mapped_column(String(64), index=True)
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
