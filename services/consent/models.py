"""Consent storage. Nothing is updated in place: every change is a new ``ConsentVersion`` row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.db import Base, UTCDateTime


class Survivor(Base):
    """A survivor known to Accord by pseudonym only, enrolled through an agency."""

    __tablename__ = "survivors"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Bumped on every consent change; orders the snapshots published to the relay.
    change_seq: Mapped[int] = mapped_column(Integer, default=0)
    # The last change_seq the relay's topic is known to hold; behind means "republish".
    published_seq: Mapped[int] = mapped_column(Integer, default=0)


def mark_for_republish(session: Session, survivor_id: str) -> None:
    """Have ``republish_pending`` (services/snapshot/publisher.py) publish the survivor's
    snapshot again: after their data key was erased, the snapshot on the topic no longer opens.
    Here, beside the two sequence numbers, so that the erasure (services/consent/erasure.py) need
    not reach into the publisher."""
    session.execute(
        update(Survivor)
        .where(Survivor.id == survivor_id)
        .values(change_seq=Survivor.change_seq + 1)
    )


class Guardian(Base):
    """A guardian recorded for a minor. A guardian recorded as a suspect can do nothing (R5)."""

    __tablename__ = "guardians"
    __table_args__ = (UniqueConstraint("guardian_id", "survivor_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    guardian_id: Mapped[str] = mapped_column(String(128), index=True)
    survivor_id: Mapped[str] = mapped_column(ForeignKey("survivors.id"))
    # Sealed with the survivor's data key (services/atrest): it says who the minor's family is.
    relation: Mapped[str] = mapped_column(Text)
    suspect: Mapped[bool] = mapped_column(Boolean, default=False)


class EnrollmentCode(Base):
    """Single use, short-lived; exchanged for a credential scoped to one survivor or guardian."""

    __tablename__ = "enrollment_codes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128))
    survivor_id: Mapped[str] = mapped_column(ForeignKey("survivors.id"))
    issued_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ConsentVersion(Base):
    __tablename__ = "consent_versions"

    consent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    survivor_id: Mapped[str] = mapped_column(ForeignKey("survivors.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    provisions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    recorded_by: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The Evidence as JSON, sealed with the survivor's data key (services/atrest): a signed
    # statement's title or a form reference can identify. NULL: erased before this version.
    evidence: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Disclosure(Base):
    """One release of data about a survivor, or a notice sent about one (R14).

    Filled from the relay's decision records (``services/consent/disclosures.py``); only
    field names and categories, never values.
    """

    __tablename__ = "disclosures"
    __table_args__ = (UniqueConstraint("event_id", "partner_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    survivor_id: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # "release" | "revocation_notice"
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(128))
    partner_id: Mapped[str] = mapped_column(String(64))
    partner_type: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(64))
    fields: Mapped[list[str]] = mapped_column(JSON)
    basis: Mapped[list[str]] = mapped_column(JSON)
    consents: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
