"""Who is calling: a role, and the subject it acts for (an agency, a partner, a survivor)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    AGENCY = "agency"  # publishes events as itself
    PARTNER = "partner"  # reads its own deliveries
    SURVIVOR = "survivor"  # sees and changes only their own consents
    ADVOCATE = "advocate"  # acts with survivors of their agency
    GUARDIAN = "guardian"  # acts for the minor they are recorded for
    SUPERVISOR = "supervisor"  # agency staff authorised to declare danger, record court orders
    COMPLIANCE = "compliance"  # audits decisions
    ADMIN = "admin"  # registers agencies, partners and subscriptions


@dataclass(frozen=True)
class Principal:
    role: Role
    subject: str
    credential_id: str
    agency_id: str | None = None
