"""The accounting of disclosures (R14), behind one interface.

Releases are read from the audit chain (services/consent/audit_disclosures.py); the ``disclosures``
table here keeps the notices: revocations sent to partners, declarations the survivor was told
of. Only field names and categories, never values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.consent import models

log = logging.getLogger("accord.disclosures")

Categorize = Callable[[str, str], str | None]  # (event type, field) → category


class DisclosureOut(BaseModel):
    kind: str
    at: datetime
    event_id: str
    event_type: str
    partner_id: str
    partner_type: str
    purpose: str
    categories: list[str]
    fields: list[str]
    basis: list[str]
    consents: list[dict[str, Any]]
    # kind "referral" (services/referrals/): the referral and its state now; `fields` are
    # what the partner was sent (empty: nothing, e.g. refused by the sharing rules).
    referral_id: str | None = None
    referral_state: str | None = None


class DisclosureLog(Protocol):
    def for_survivor(self, survivor_id: str) -> list[DisclosureOut]: ...

    def recipients_under(self, consent_id: str) -> list[tuple[str, str]]: ...

    def record_notice(
        self,
        *,
        survivor_id: str,
        consent_id: str,
        version: int,
        partner: tuple[str, str],
        notice_id: str,
        at: datetime,
    ) -> None: ...


class SqlDisclosureLog:
    """The notices in the ``disclosures`` table (releases are read from the audit chain)."""

    def __init__(self, sessions: sessionmaker[Session], categorize: Categorize) -> None:
        self._sessions = sessions
        self._categorize = categorize

    def for_survivor(self, survivor_id: str) -> list[DisclosureOut]:
        with self._sessions() as session:
            rows = session.scalars(
                select(models.Disclosure)
                .where(models.Disclosure.survivor_id == survivor_id)
                .order_by(models.Disclosure.at, models.Disclosure.id)
            )
            return [self._out(r) for r in rows]

    def _out(self, r: models.Disclosure) -> DisclosureOut:
        categories = sorted({c for f in r.fields if (c := self._categorize(r.event_type, f))})
        return DisclosureOut(
            kind=r.kind,
            at=r.at,
            event_id=r.event_id,
            event_type=r.event_type,
            partner_id=r.partner_id,
            partner_type=r.partner_type,
            purpose=r.purpose,
            categories=categories,
            fields=r.fields,
            basis=r.basis,
            consents=r.consents,
        )

    def record_notice(
        self,
        *,
        survivor_id: str,
        consent_id: str,
        version: int,
        partner: tuple[str, str],
        notice_id: str,
        at: datetime,
    ) -> None:
        with self._sessions() as session, session.begin():
            exists = session.scalar(
                select(models.Disclosure.id).where(
                    models.Disclosure.event_id == notice_id,
                    models.Disclosure.partner_id == partner[0],
                    models.Disclosure.kind == "revocation_notice",
                )
            )
            if exists is not None:  # sent again (an erasure re-run): recorded once
                return
            session.add(
                models.Disclosure(
                    survivor_id=survivor_id,
                    kind="revocation_notice",
                    event_id=notice_id,
                    event_type="accord.consent.revoked",
                    partner_id=partner[0],
                    partner_type=partner[1],
                    purpose="",
                    fields=[],
                    basis=[],
                    consents=[{"id": consent_id, "version": version}],
                    at=at,
                )
            )
