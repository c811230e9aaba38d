"""data at rest: per-survivor data keys; consent evidence and justifications sealed

Creates ``survivor_keys`` and seals, in place, every plaintext consent evidence (the column
becomes text, nullable for erased evidence) and every declaration and court-order
justification with its survivor's new data key, wrapped by the active KEK of the settings
(docs/at-rest.md). Self-contained on purpose: it uses the envelope functions
(``services/migrations/sealing.py``), not the ORM models, which may change after this revision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 19:00:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from services.atrest.keys import kek_ring
from services.db import UTCDateTime
from services.migrations.sealing import Keys, is_sealed, opener
from services.settings import Settings

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

EVIDENCE = "consent_versions.evidence"
SEALED = {
    "declarations": "declarations.justification",
    "court_orders": "court_orders.justification",
}


versions = sa.table(
    "consent_versions",
    sa.column("consent_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("survivor_id", sa.String),
    sa.column("evidence", sa.Text),
)


def _justified(name: str) -> sa.TableClause:
    """``declarations`` or ``court_orders``, as far as their justification goes."""
    return sa.table(
        name,
        sa.column("id", sa.String),
        sa.column("survivor_id", sa.String),
        sa.column("justification", sa.Text),
    )


def upgrade() -> None:
    op.create_table(
        "survivor_keys",
        sa.Column("survivor_id", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=True),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("erased_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("survivor_id", "generation"),
    )
    with op.batch_alter_table("survivor_keys", schema=None) as batch_op:
        batch_op.create_index("ix_survivor_keys_kek_id", ["kek_id"], unique=False)
    with op.batch_alter_table("consent_versions", schema=None) as batch_op:
        batch_op.alter_column(
            "evidence",
            existing_type=sa.JSON(),
            type_=sa.Text(),
            nullable=True,
            postgresql_using="evidence::text",
        )

    conn = op.get_bind()
    keys = Keys(conn, kek_ring(Settings()))  # none yet: each survivor gets generation 1
    for consent_id, version, survivor_id, evidence in conn.execute(sa.select(versions)).all():
        if evidence is None or is_sealed(evidence):
            continue
        text = json.dumps(json.loads(evidence), sort_keys=True)
        token = keys.seal(text, survivor_id, EVIDENCE, f"{consent_id}:{version}")
        conn.execute(
            versions.update()
            .where(versions.c.consent_id == consent_id, versions.c.version == version)
            .values(evidence=token)
        )
    for name, purpose in SEALED.items():
        table = _justified(name)
        for row_id, survivor_id, justification in conn.execute(sa.select(table)).all():
            if is_sealed(justification):
                continue
            token = keys.seal(justification, survivor_id, purpose, row_id)
            conn.execute(table.update().where(table.c.id == row_id).values(justification=token))


def downgrade() -> None:
    """Back to plaintext; what was erased stays gone (a placeholder says so)."""
    conn = op.get_bind()
    clear = opener(conn, kek_ring(Settings()))
    erased = json.dumps({"kind": "form_reference", "reference": "(erased)"})
    for consent_id, version, survivor_id, evidence in conn.execute(sa.select(versions)).all():
        text = (
            None
            if evidence is None
            else clear(evidence, survivor_id, EVIDENCE, f"{consent_id}:{version}")
        )
        conn.execute(
            versions.update()
            .where(versions.c.consent_id == consent_id, versions.c.version == version)
            .values(evidence=text if text is not None else erased)
        )
    for name, purpose in SEALED.items():
        table = _justified(name)
        for row_id, survivor_id, token in conn.execute(sa.select(table)).all():
            text = clear(token, survivor_id, purpose, row_id)
            conn.execute(
                table.update()
                .where(table.c.id == row_id)
                .values(justification=text if text is not None else "(erased)")
            )
    with op.batch_alter_table("consent_versions", schema=None) as batch_op:
        batch_op.alter_column(
            "evidence",
            existing_type=sa.Text(),
            type_=sa.JSON(),
            nullable=False,
            postgresql_using="evidence::json",
        )
    op.drop_table("survivor_keys")
