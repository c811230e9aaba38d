"""audit: entries signed by their appender; checkpoints leave the database

Each entry gets the appender's Ed25519 signature over its hash. Checkpoints are no longer kept
in ``audit_checkpoints``: the checkpointer publishes them to a topic only it writes and a
JSON-lines file (services/audit/witness.py), which the database's writers cannot rewrite.
A chain written before this revision has unsigned entries, which verify reports as forged:
such a database cannot be carried over (docs/audit.md).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signature", sa.String(length=128), nullable=True))
    op.drop_table("audit_checkpoints")


def downgrade() -> None:
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
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_column("signature")
