"""audit chain: hash-chained entries, signed checkpoints, the append lock

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.db import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("entry_key", sa.String(length=400), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("event_id", sa.String(length=256), nullable=True),
        sa.Column("partner_id", sa.String(length=64), nullable=True),
        sa.Column("agency_id", sa.String(length=64), nullable=True),
        sa.Column("partner_type", sa.String(length=64), nullable=True),
        sa.Column("event_type", sa.String(length=128), nullable=True),
        sa.Column("survivor_id", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("basis", sa.String(length=400), nullable=False),
        sa.Column("rules", sa.String(length=400), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("entry_key"),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index("ix_audit_entries_kind", ["kind"], unique=False)
        batch_op.create_index("ix_audit_entries_at", ["at"], unique=False)
        batch_op.create_index("ix_audit_entries_event_id", ["event_id"], unique=False)
        batch_op.create_index("ix_audit_entries_survivor_id", ["survivor_id"], unique=False)
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS, "pruned_through": None}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_entries_survivor_id")
        batch_op.drop_index("ix_audit_entries_event_id")
        batch_op.drop_index("ix_audit_entries_at")
        batch_op.drop_index("ix_audit_entries_kind")
    op.drop_table("audit_entries")
