"""Referrals: one row per referral, and one row per change of its state (its history).

A row holds ids, codes, field names and times; the only free text, a partner's note on a
decline, is sealed with the survivor's data key (services/atrest) and never shared onward.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.db import Base, UTCDateTime


class Referral(Base):
    __tablename__ = "referrals"
    __table_args__ = (UniqueConstraint("agency_id", "event_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    survivor_id: Mapped[str] = mapped_column(String(128), index=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    partner_type: Mapped[str] = mapped_column(String(64))
    # The partner's jurisdiction; with ``addressed_as`` "type" the referral named only the
    # partner type of this jurisdiction and Accord resolved it to the partner.
    jurisdiction: Mapped[str] = mapped_column(String(64))
    addressed_as: Mapped[str] = mapped_column(String(16))  # "partner" | "type"
    purpose: Mapped[str] = mapped_column(String(64))
    # The signed `accord.referral.made` event the relay delivers (unique per agency).
    event_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)  # changes so far
    supersedes: Mapped[str | None] = mapped_column(ForeignKey("referrals.id"), default=None)
    made_by: Mapped[str] = mapped_column(String(128))
    made_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason_code: Mapped[str | None] = mapped_column(String(64), default=None)
    outcome_code: Mapped[str | None] = mapped_column(String(64), default=None)
    # Sealed (services/atrest, purpose "referral_note"): the partner's words on a decline.
    note: Mapped[str | None] = mapped_column(Text, default=None)
    # What the relay's decision released and withheld (names and rule ids, never values).
    released: Mapped[list[str]] = mapped_column(JSON, default=list)
    withheld: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    # The rule ids that let nothing through (state "refused").
    refused_rules: Mapped[list[str]] = mapped_column(JSON, default=list)
    # A deadline fell due unmet (services/referrals/deadline_worker.py); cleared by no one: the
    # referral's history keeps it.
    overdue: Mapped[bool] = mapped_column(Boolean, default=False, index=True)

    history: Mapped[list[ReferralChange]] = relationship(
        back_populates="referral",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="ReferralChange.seq",
    )


class ReferralChange(Base):
    """One change of state; ``published`` once its CloudEvent is on the referrals topic."""

    __tablename__ = "referral_changes"
    __table_args__ = (UniqueConstraint("referral_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(16), default=None)  # None: made
    target: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(String(128))
    code: Mapped[str | None] = mapped_column(String(64), default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    published: Mapped[bool] = mapped_column(Boolean, default=False, index=True)

    referral: Mapped[Referral] = relationship(back_populates="history")


class ReferralBreach(Base):
    """A deadline that fell due unmet: written once per referral and kind (the unique key),
    in the same transaction as its effects (the overdue flag, the supervisor's alert, the
    proposal, the audit entry), so a breach fires exactly once whatever crashes when."""

    __tablename__ = "referral_breaches"
    __table_args__ = (UniqueConstraint("referral_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # acknowledge | answer | expire
    agency_id: Mapped[str] = mapped_column(String(64), index=True)  # whose supervisors
    partner_id: Mapped[str] = mapped_column(String(64))
    partner_type: Mapped[str] = mapped_column(String(64))
    jurisdiction: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The next eligible partner of the same type, when the policy says to propose one.
    proposed_partner_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # When a supervisor of the agency marked the alert seen.
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    seen_by: Mapped[str | None] = mapped_column(String(128), default=None)
