"""data at rest: per-survivor data keys; consent evidence and justifications sealed

Creates ``survivor_keys`` and seals, in place, every plaintext consent evidence (the column
becomes text, nullable for erased evidence) and every declaration and court-order
justification with its survivor's new data key, wrapped by the active KEK of the settings
(docs/at-rest.md). Self-contained on purpose: it uses the envelope functions, not the ORM
models, which may change after this revision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 19:00:00
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from services.atrest import envelope
from services.db import UTCDateTime
from services.keys import kek_ring
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
GENERATION = 1  # survivors had no key before this revision


class _Deks(dict[str, bytes]):
    """Each survivor's generation-1 DEK, created (and stored wrapped) when first needed."""

    def __init__(self, conn: sa.Connection, keys: sa.Table, ring: envelope.KekRing) -> None:
        super().__init__()
        self._conn, self._keys, self._ring = conn, keys, ring
        self._now = datetime.now(UTC)

    def __missing__(self, survivor_id: str) -> bytes:
        dek = envelope.new_dek()
        context = envelope.dek_context(survivor_id, GENERATION)
        self._conn.execute(
            self._keys.insert().values(
                survivor_id=survivor_id,
                generation=GENERATION,
                kek_id=self._ring.active_id,
                wrapped_dek=self._ring.active.wrap(dek, context),
                created_at=self._now,
            )
        )
        self[survivor_id] = dek
        return dek


def upgrade() -> None:
    keys = op.create_table(
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
    deks = _Deks(conn, keys, kek_ring(Settings()))
    versions = sa.table(
        "consent_versions",
        sa.column("consent_id", sa.String),
        sa.column("version", sa.Integer),
        sa.column("survivor_id", sa.String),
        sa.column("evidence", sa.Text),
    )
    rows = conn.execute(
        sa.select(
            versions.c.consent_id, versions.c.version, versions.c.survivor_id, versions.c.evidence
        )
    ).all()
    for consent_id, version, survivor_id, evidence in rows:
        if evidence is None or evidence.startswith(f"{envelope.FORMAT}."):
            continue
        text = json.dumps(json.loads(evidence), sort_keys=True)
        token = envelope.seal(
            deks[survivor_id],
            GENERATION,
            text.encode(),
            survivor_id=survivor_id,
            purpose=EVIDENCE,
            row=f"{consent_id}:{version}",
        )
        conn.execute(
            versions.update()
            .where(versions.c.consent_id == consent_id, versions.c.version == version)
            .values(evidence=token)
        )
    for name, purpose in SEALED.items():
        table = sa.table(
            name,
            sa.column("id", sa.String),
            sa.column("survivor_id", sa.String),
            sa.column("justification", sa.Text),
        )
        for row_id, survivor_id, justification in conn.execute(
            sa.select(table.c.id, table.c.survivor_id, table.c.justification)
        ).all():
            if justification.startswith(f"{envelope.FORMAT}."):
                continue
            token = envelope.seal(
                deks[survivor_id],
                GENERATION,
                justification.encode(),
                survivor_id=survivor_id,
                purpose=purpose,
                row=row_id,
            )
            conn.execute(table.update().where(table.c.id == row_id).values(justification=token))


def downgrade() -> None:
    """Back to plaintext; what was erased stays gone (a placeholder says so)."""
    conn = op.get_bind()
    ring = kek_ring(Settings())
    keys = sa.table(
        "survivor_keys",
        sa.column("survivor_id", sa.String),
        sa.column("generation", sa.Integer),
        sa.column("kek_id", sa.String),
        sa.column("wrapped_dek", sa.LargeBinary),
    )
    deks: dict[tuple[str, int], bytes | None] = {}
    for survivor_id, generation, kek_id, wrapped in conn.execute(sa.select(keys)).all():
        deks[(survivor_id, generation)] = (
            None
            if wrapped is None
            else ring.unwrap(kek_id, wrapped, envelope.dek_context(survivor_id, generation))
        )

    def clear(token: str, survivor_id: str, purpose: str, row: str) -> str | None:
        dek = deks.get((survivor_id, envelope.generation_of(token)))
        if dek is None:
            return None
        return envelope.open_sealed(
            dek, token, survivor_id=survivor_id, purpose=purpose, row=row
        ).decode()

    versions = sa.table(
        "consent_versions",
        sa.column("consent_id", sa.String),
        sa.column("version", sa.Integer),
        sa.column("survivor_id", sa.String),
        sa.column("evidence", sa.Text),
    )
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
        table = sa.table(
            name,
            sa.column("id", sa.String),
            sa.column("survivor_id", sa.String),
            sa.column("justification", sa.Text),
        )
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
