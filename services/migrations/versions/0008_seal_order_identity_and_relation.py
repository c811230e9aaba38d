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

Self-contained on purpose, like 0007: envelope functions (``services/migrations/sealing.py``),
not the ORM models.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.atrest.keys import kek_ring
from services.db import UTCDateTime
from services.migrations.sealing import Keys, is_sealed, opener
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
    keys = Keys(conn, kek_ring(Settings()))

    for row_id, survivor_id, reference, court, at in conn.execute(sa.select(_orders)).all():
        if is_sealed(reference) and is_sealed(court):
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
        if is_sealed(relation):
            continue
        token = keys.seal(relation, survivor_id, RELATION, str(row_id), None)
        conn.execute(_guardians.update().where(_guardians.c.id == row_id).values(relation=token))
    for consent_id, version, survivor_id, by, at in conn.execute(sa.select(_versions)).all():
        relation = by.get("relation")
        if relation is None or is_sealed(relation):
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
    clear = opener(conn, kek_ring(Settings()))
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
