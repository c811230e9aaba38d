"""The partner registry: agencies that publish, partners that receive, what they subscribe to."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.db import Base, UTCDateTime


class Agency(Base):
    __tablename__ = "agencies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Events are judged under the rules of the publishing agency's jurisdiction (R12).
    jurisdiction: Mapped[str] = mapped_column(String(64))
    # Ed25519 verify key (base64) for the signatures on its events; none means "cannot publish".
    public_key: Mapped[str | None] = mapped_column(String(64), default=None)


class Partner(Base):
    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(64))
    jurisdiction: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")
    vetted: Mapped[bool] = mapped_column(Boolean, default=False)
    immigration_enforcement: Mapped[bool] = mapped_column(Boolean, default=False)
    training_attested_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Curve25519 public key (base64) that deliveries are sealed to; none means nothing is sealed
    # for it, so nothing is delivered.
    public_key: Mapped[str | None] = mapped_column(String(64), default=None)
    # When its referral deadlines count (services/referrals/coverage.py); none: around the clock.
    coverage: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)

    agreements: Mapped[list[Agreement]] = relationship(
        back_populates="partner", cascade="all, delete-orphan", lazy="selectin"
    )
    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="partner", cascade="all, delete-orphan", lazy="selectin"
    )


class Agreement(Base):
    """A data-sharing agreement (MOU): purposes and categories it covers, and when (R11)."""

    __tablename__ = "agreements"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    purposes: Mapped[list[str]] = mapped_column(JSON)
    categories: Mapped[list[str]] = mapped_column(JSON)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime())

    partner: Mapped[Partner] = relationship(back_populates="agreements")


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    event_types: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(64))

    partner: Mapped[Partner] = relationship(back_populates="subscriptions")
