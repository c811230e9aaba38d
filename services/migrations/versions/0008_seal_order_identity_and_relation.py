"""data at rest: a court order's reference and court, a guardian's relation, sealed

Seals, in place, ``court_orders.reference`` and ``.court``, ``guardians.relation`` and the copy
of a guardian's relation in ``consent_versions.recorded_by`` with each survivor's data key,
exactly as 0007 sealed the justifications (purpose ``table.column``, row = the row id; a
consent version's row is ``<consent id>:<version>``). No unique constraint, index or query
uses these columns (guardians are found by ``guardian_id`` and survivor), so no keyed hash is
kept. The columns become text: a ciphertext is longer than the value.

A survivor whose key was erased (``accord keys erase``) still had these columns in clear: a
value written before their latest erasure is sealed as that erasure would have left it,
unreadable (a ciphertext under the erased generation with a key no one keeps); a guardian row
has no time, so any erasure of the survivor shreds it. Everything else is sealed with the
survivor's newest live data key, created (next generation) when they have none.

The relay's snapshot no longer carries these values: every survivor with a court order or a
guardian-recorded consent gets ``change_seq`` bumped, so the API republishes their snapshot at
start (``republish_pending``) and compaction drops the records that held them. The downgrade
bumps again, for the old policy, which wants them.

Self-contained on purpose, like 0007: envelope functions, not the ORM models.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 21:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from services.atrest import envelope
from services.db import UTCDateTime
from services.keys import kek_ring
from services.settings import Settings

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

REFERENCE, COURT = "court_orders.reference", "court_orders.court"
RELATION, RECORDED_RELATION = "guardians.relation", "consent_versions.recorded_by"
ERASED = "(erased)"  # what the downgrade writes for a value no key can open
# Plain column types before this revision (0002, 0003).
PLAIN = {("court_orders", "reference"): 128, ("court_orders", "court"): 200,
         ("guardians", "relation"): 64}  # fmt: skip

_keys = sa.table(
    "survivor_keys",
    sa.column("survivor_id", sa.String),
    sa.column("generation", sa.Integer),
    sa.column("kek_id", sa.String),
    sa.column("wrapped_dek", sa.LargeBinary),
    sa.column("created_at", UTCDateTime),
    sa.column("erased_at", UTCDateTime),
)
_orders = sa.table(
    "court_orders",
    sa.column("id", sa.String),
    sa.column("survivor_id", sa.String),
    sa.column("reference", sa.Text),
    sa.column("court", sa.Text),
    sa.column("recorded_at", UTCDateTime),
)
_guardians = sa.table(
    "guardians",
    sa.column("id", sa.Integer),
    sa.column("survivor_id", sa.String),
    sa.column("relation", sa.Text),
)
_versions = sa.table(
    "consent_versions",
    sa.column("consent_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("survivor_id", sa.String),
    sa.column("recorded_by", sa.JSON),
    sa.column("recorded_at", UTCDateTime),
)
_survivors = sa.table("survivors", sa.column("id", sa.String), sa.column("change_seq", sa.Integer))


class _Keys:
    """Each survivor's keys as the upgrade needs them: the newest live DEK (created, next
    generation, when there is none) and the time and generation of their latest erasure."""

    def __init__(self, conn: sa.Connection, ring: envelope.KekRing) -> None:
        self._conn, self._ring, self._now = conn, ring, datetime.now(UTC)
        self._live: dict[str, tuple[int, bytes]] = {}
        self._newest: dict[str, int] = {}
        self.erased: dict[str, tuple[datetime, int]] = {}
        for survivor_id, generation, kek_id, wrapped, _, erased_at in conn.execute(
            sa.select(_keys).order_by(_keys.c.survivor_id, _keys.c.generation)
        ).all():
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
                _keys.insert().values(
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

    def seal(self, text: str, survivor_id: str, purpose: str, row: str, at: datetime | None) -> str:
        """Sealed with the live key; or, when written before the survivor's latest erasure
        (``at`` None: unknown, so before), under the erased generation with a key no one keeps."""
        erased = self.erased.get(survivor_id)
        if erased is not None and (at is None or at <= erased[0]):
            generation, dek = erased[1], envelope.new_dek()  # discarded: shredded
        else:
            generation, dek = self.live(survivor_id)
        return envelope.seal(
            dek, generation, text.encode(), survivor_id=survivor_id, purpose=purpose, row=row
        )


def _sealed(value: str) -> bool:
    return value.startswith(f"{envelope.FORMAT}.")


def _bump(conn: sa.Connection) -> None:
    """Survivors whose snapshot changes: republished by the API at start."""
    affected = sa.union(
        sa.select(_orders.c.survivor_id),
        sa.select(_guardians.c.survivor_id),
    ).subquery()
    conn.execute(
        _survivors.update()
        .where(_survivors.c.id.in_(sa.select(affected.c.survivor_id)))
        .values(change_seq=_survivors.c.change_seq + 1)
    )


def _widen(table: str, column: str, *, plain: bool) -> None:
    length = PLAIN[(table, column)]
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.alter_column(
            column,
            existing_type=sa.Text() if plain else sa.String(length=length),
            type_=sa.String(length=length) if plain else sa.Text(),
            existing_nullable=False,
        )


def upgrade() -> None:
    for table, column in PLAIN:
        _widen(table, column, plain=False)
    conn = op.get_bind()
    keys = _Keys(conn, kek_ring(Settings()))

    for row_id, survivor_id, reference, court, at in conn.execute(sa.select(_orders)).all():
        if _sealed(reference) and _sealed(court):
            continue
        conn.execute(
            _orders.update()
            .where(_orders.c.id == row_id)
            .values(
                reference=keys.seal(reference, survivor_id, REFERENCE, row_id, at),
                court=keys.seal(court, survivor_id, COURT, row_id, at),
            )
        )
    for row_id, survivor_id, relation in conn.execute(sa.select(_guardians)).all():
        if _sealed(relation):
            continue
        token = keys.seal(relation, survivor_id, RELATION, str(row_id), None)
        conn.execute(_guardians.update().where(_guardians.c.id == row_id).values(relation=token))
    for consent_id, version, survivor_id, by, at in conn.execute(sa.select(_versions)).all():
        relation = by.get("relation")
        if relation is None or _sealed(relation):
            continue
        row = f"{consent_id}:{version}"
        by = {**by, "relation": keys.seal(relation, survivor_id, RECORDED_RELATION, row, at)}
        conn.execute(
            _versions.update()
            .where(_versions.c.consent_id == consent_id, _versions.c.version == version)
            .values(recorded_by=by)
        )
    _bump(conn)


def downgrade() -> None:
    """Back to plaintext; what was erased stays gone (a placeholder, or no relation)."""
    conn = op.get_bind()
    ring = kek_ring(Settings())
    deks: dict[tuple[str, int], bytes | None] = {}
    for survivor_id, generation, kek_id, wrapped, _, _ in conn.execute(sa.select(_keys)).all():
        deks[(survivor_id, generation)] = (
            None
            if wrapped is None
            else ring.unwrap(kek_id, wrapped, envelope.dek_context(survivor_id, generation))
        )

    def clear(token: str, survivor_id: str, purpose: str, row: str) -> str | None:
        if not _sealed(token):
            return token
        dek = deks.get((survivor_id, envelope.generation_of(token)))
        if dek is None:
            return None
        return envelope.open_sealed(
            dek, token, survivor_id=survivor_id, purpose=purpose, row=row
        ).decode()

    for row_id, survivor_id, reference, court, _ in conn.execute(sa.select(_orders)).all():
        conn.execute(
            _orders.update()
            .where(_orders.c.id == row_id)
            .values(
                reference=clear(reference, survivor_id, REFERENCE, row_id) or ERASED,
                court=clear(court, survivor_id, COURT, row_id) or ERASED,
            )
        )
    for row_id, survivor_id, relation in conn.execute(sa.select(_guardians)).all():
        text = clear(relation, survivor_id, RELATION, str(row_id)) or ERASED
        conn.execute(_guardians.update().where(_guardians.c.id == row_id).values(relation=text))
    for consent_id, version, survivor_id, by, _ in conn.execute(sa.select(_versions)).all():
        token = by.get("relation")
        if token is None:
            continue
        row = f"{consent_id}:{version}"
        by = {**by, "relation": clear(token, survivor_id, RECORDED_RELATION, row)}
        conn.execute(
            _versions.update()
            .where(_versions.c.consent_id == consent_id, _versions.c.version == version)
            .values(recorded_by=by)
        )
    _bump(conn)
    for table, column in PLAIN:
        _widen(table, column, plain=True)
