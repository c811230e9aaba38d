"""rejected events: the dead letters each agency can list

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 16:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.db import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rejected_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agency_id", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.String(length=256), nullable=True),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=2000), nullable=False),
        sa.Column("inbound_topic", sa.String(length=255), nullable=False),
        sa.Column("inbound_partition", sa.Integer(), nullable=False),
        sa.Column("inbound_offset", sa.BigInteger(), nullable=False),
        sa.Column("rejected_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("inbound_topic", "inbound_partition", "inbound_offset"),
    )
    with op.batch_alter_table("rejected_events", schema=None) as batch_op:
        batch_op.create_index("ix_rejected_events_agency_id", ["agency_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rejected_events", schema=None) as batch_op:
        batch_op.drop_index("ix_rejected_events_agency_id")
    op.drop_table("rejected_events")
