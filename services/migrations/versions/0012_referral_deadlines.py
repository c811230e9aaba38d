"""referral deadlines: breaches fired once, the overdue flag, partners' coverage hours (issue 14)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 08:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.db import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_breaches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("agency_id", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("partner_type", sa.String(length=64), nullable=False),
        sa.Column("jurisdiction", sa.String(length=64), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("fired_at", UTCDateTime(), nullable=False),
        sa.Column("proposed_partner_id", sa.String(length=64), nullable=True),
        sa.Column("seen_at", UTCDateTime(), nullable=True),
        sa.Column("seen_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(["referral_id"], ["referrals.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("referral_id", "kind"),
    )
    op.create_index("ix_referral_breaches_agency_id", "referral_breaches", ["agency_id"])
    with op.batch_alter_table("referrals") as batch:
        batch.add_column(
            sa.Column("overdue", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_referrals_overdue", ["overdue"])
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("coverage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("coverage")
    with op.batch_alter_table("referrals") as batch:
        batch.drop_index("ix_referrals_overdue")
        batch.drop_column("overdue")
    op.drop_index("ix_referral_breaches_agency_id", table_name="referral_breaches")
    op.drop_table("referral_breaches")
