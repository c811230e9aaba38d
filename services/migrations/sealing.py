"""What the migrations that seal columns in place share (0007, 0008): survivors' data keys as
a migration sees them, sealing under them, and opening again for a downgrade.

Like the revisions, it uses the envelope functions and lightweight tables, never the ORM
models, which may change after a revision; a change here must keep every revision's result.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from services.atrest import envelope
from services.db import UTCDateTime

SURVIVOR_KEYS = sa.table(
    "survivor_keys",
    sa.column("survivor_id", sa.String),
    sa.column("generation", sa.Integer),
    sa.column("kek_id", sa.String),
    sa.column("wrapped_dek", sa.LargeBinary),
    sa.column("created_at", UTCDateTime),
    sa.column("erased_at", UTCDateTime),
)

# Opens a token of (survivor, purpose, row): its text, None if its key was erased; a value
# that is not a token is returned as it is.
Opener = Callable[[str, str, str, str], str | None]


def is_sealed(value: str) -> bool:
    return value.startswith(f"{envelope.FORMAT}.")


class Keys:
    """Each survivor's keys as an upgrade needs them: the newest live DEK (created, next
    generation, when there is none) and the time and generation of their latest erasure."""

    def __init__(self, conn: sa.Connection, ring: envelope.KekRing) -> None:
        self._conn, self._ring, self._now = conn, ring, datetime.now(UTC)
        self._live: dict[str, tuple[int, bytes]] = {}
        self._newest: dict[str, int] = {}
        self.erased: dict[str, tuple[datetime, int]] = {}
        rows = conn.execute(
            sa.select(SURVIVOR_KEYS).order_by(
                SURVIVOR_KEYS.c.survivor_id, SURVIVOR_KEYS.c.generation
            )
        ).all()
        for survivor_id, generation, kek_id, wrapped, _created, erased_at in rows:
            self._newest[survivor_id] = generation
            # An erasure destroys every live generation: a live one is newer than any erased.
            if wrapped is not None:
                context = envelope.dek_context(survivor_id, generation)
                self._live[survivor_id] = (generation, ring.unwrap(kek_id, wrapped, context))
            elif erased_at is not None:
                self.erased[survivor_id] = (erased_at, generation)

    def live(self, survivor_id: str) -> tuple[int, bytes]:
        if survivor_id not in self._live:
            generation = self._newest.get(survivor_id, 0) + 1
            dek = envelope.new_dek()
            self._conn.execute(
                SURVIVOR_KEYS.insert().values(
                    survivor_id=survivor_id,
                    generation=generation,
                    kek_id=self._ring.active_id,
                    wrapped_dek=self._ring.active.wrap(
                        dek, envelope.dek_context(survivor_id, generation)
                    ),
                    created_at=self._now,
                )
            )
            self._newest[survivor_id] = generation
            self._live[survivor_id] = (generation, dek)
        return self._live[survivor_id]

    def seal(
        self, text: str, survivor_id: str, purpose: str, row: str, at: datetime | None = None
    ) -> str:
        """Sealed with the live key; or, when written before the survivor's latest erasure
        (``at`` None: unknown, so before), under the erased generation with a key no one
        keeps (shredded, as the erasure would have left it)."""
        erased = self.erased.get(survivor_id)
        if erased is not None and (at is None or at <= erased[0]):
            generation, dek = erased[1], envelope.new_dek()  # discarded: shredded
        else:
            generation, dek = self.live(survivor_id)
        return envelope.seal(
            dek, generation, text.encode(), survivor_id=survivor_id, purpose=purpose, row=row
        )


def opener(conn: sa.Connection, ring: envelope.KekRing) -> Opener:
    """For a downgrade: opens tokens with every DEK there is (erased ones open to None)."""
    deks: dict[tuple[str, int], bytes | None] = {}
    for survivor_id, generation, kek_id, wrapped, _, _ in conn.execute(
        sa.select(SURVIVOR_KEYS)
    ).all():
        deks[(survivor_id, generation)] = (
            None
            if wrapped is None
            else ring.unwrap(kek_id, wrapped, envelope.dek_context(survivor_id, generation))
        )

    def clear(token: str, survivor_id: str, purpose: str, row: str) -> str | None:
        if not is_sealed(token):
            return token
        dek = deks.get((survivor_id, envelope.generation_of(token)))
        if dek is None:
            return None
        return envelope.open_sealed(
            dek, token, survivor_id=survivor_id, purpose=purpose, row=row
        ).decode()

    return clear
