"""safe contact: survivors' contact preferences (sealed) and the survivor-notice outbox

``contact_preferences`` holds one sealed preference per survivor (services/contact/,
docs/safe-contact.md); ``survivor_notices`` is the outbox every notice to a survivor goes
through (the notice gate). Both new: nothing to carry over.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.db import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contact_preferences",
        sa.Column("survivor_id", sa.String(length=128), nullable=False),
        sa.Column("preference", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["survivor_id"], ["survivors.id"]),
        sa.PrimaryKeyConstraint("survivor_id"),
    )
    op.create_table(
        "survivor_notices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("survivor_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("about", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["survivor_id"], ["survivors.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("survivor_notices", schema=None) as batch_op:
        batch_op.create_index("ix_survivor_notices_survivor_id", ["survivor_id"], unique=False)
        batch_op.create_index("ix_survivor_notices_status", ["status"], unique=False)
        batch_op.create_index("ix_survivor_notices_due_at", ["due_at"], unique=False)


def downgrade() -> None:
    op.drop_table("survivor_notices")
    op.drop_table("contact_preferences")
