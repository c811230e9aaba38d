"""referrals: a first-class, consent-governed workflow (issue 14)

One row per referral (to whom, for what purpose, its state and times, what the relay released)
and one per change of its state, each published as a CloudEvent on the referrals topic.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 08:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.db import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agency_id", sa.String(length=64), nullable=False),
        sa.Column("survivor_id", sa.String(length=128), nullable=False),
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("partner_type", sa.String(length=64), nullable=False),
        sa.Column("jurisdiction", sa.String(length=64), nullable=False),
        sa.Column("addressed_as", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("supersedes", sa.String(length=64), nullable=True),
        sa.Column("made_by", sa.String(length=128), nullable=False),
        sa.Column("made_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("answered_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=True),
        sa.Column("outcome_code", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("released", sa.JSON(), nullable=False),
        sa.Column("withheld", sa.JSON(), nullable=False),
        sa.Column("refused_rules", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["agency_id"], ["agencies.id"]),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"]),
        sa.ForeignKeyConstraint(["supersedes"], ["referrals.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agency_id", "event_id"),
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index("ix_referrals_agency_id", ["agency_id"], unique=False)
        batch_op.create_index("ix_referrals_survivor_id", ["survivor_id"], unique=False)
        batch_op.create_index("ix_referrals_partner_id", ["partner_id"], unique=False)
        batch_op.create_index("ix_referrals_state", ["state"], unique=False)
    op.create_table(
        "referral_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=True),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["referral_id"], ["referrals.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("referral_id", "seq"),
    )
    with op.batch_alter_table("referral_changes", schema=None) as batch_op:
        batch_op.create_index("ix_referral_changes_published", ["published"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("referral_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_referral_changes_published")
    op.drop_table("referral_changes")
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        for column in ("state", "partner_id", "survivor_id", "agency_id"):
            batch_op.drop_index(f"ix_referrals_{column}")
    op.drop_table("referrals")
