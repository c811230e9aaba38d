"""The survivor's accounting of disclosures (R14) read from the audit chain, behind the
``DisclosureLog`` interface the consent service already uses.

Releases come from the chained decision records (the tamper-evident copy); the notices the
consent and legal services record themselves (``consent.revoked`` notices to earlier
recipients, a declaration the survivor is told of) stay in the ``disclosures`` table, written
and read through ``SqlDisclosureLog``; and whatever the caller adds (``more``: the API adds each
referral about the survivor with its state and what was sent, services/referrals/). Field
names and categories only, never values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.audit.models import AuditEntry
from services.consent.disclosures import Categorize, DisclosureOut, SqlDisclosureLog

# More entries of the survivor's accounting, read in the same session: the API passes the
# referrals' (services/referrals/disclosures.py), so consent needs nothing of the referrals.
Entries = Callable[[Session, str, Categorize], Iterable[DisclosureOut]]


class AuditDisclosureLog:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        categorize: Categorize,
        *,
        more: Entries | None = None,
    ) -> None:
        self._sessions = sessions
        self._categorize = categorize
        self._more = more
        self._notices = SqlDisclosureLog(sessions, categorize)

    def _release(self, r: dict[str, Any], at: datetime) -> DisclosureOut:
        fields = list(r.get("released") or [])
        categories = sorted(
            {c for f in fields if (c := self._categorize(str(r.get("event_type")), f))}
        )
        return DisclosureOut(
            kind="release",
            at=at,
            event_id=r["event_id"],
            event_type=r["event_type"],
            partner_id=r["partner_id"],
            partner_type=r["partner_type"],
            purpose=r.get("purpose") or "",
            categories=categories,
            fields=fields,
            basis=list(r.get("basis") or []),
            consents=list(r.get("consents") or []),
        )

    def for_survivor(self, survivor_id: str) -> list[DisclosureOut]:
        with self._sessions() as session:
            rows = session.scalars(
                select(AuditEntry)
                .where(
                    AuditEntry.kind == "decision",
                    AuditEntry.survivor_id == survivor_id,
                    AuditEntry.outcome != "deny",
                )
                .order_by(AuditEntry.seq)
            )
            releases = [
                self._release(r, row.at)
                for row in rows
                if row.at is not None and (r := json.loads(row.record)).get("released")
            ]
            more = list(self._more(session, survivor_id, self._categorize)) if self._more else []
        notices = self._notices.for_survivor(survivor_id)
        return sorted(releases + notices + more, key=lambda d: d.at)

    def recipients_under(self, consent_id: str) -> list[tuple[str, str]]:
        needle = json.dumps({"id": consent_id}, separators=(",", ":"))[:-1]  # {"id":"..."
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._sessions() as session:
            rows = session.scalars(
                select(AuditEntry).where(
                    AuditEntry.kind == "decision",
                    AuditEntry.outcome != "deny",
                    AuditEntry.record.like(f"%{escaped}%", escape="\\"),
                )
            )
            found = {
                (str(r["partner_id"]), str(r["partner_type"]))
                for row in rows
                if (r := json.loads(row.record)).get("released")
                and any(c.get("id") == consent_id for c in r.get("consents") or [])
            }
        return sorted(found)

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
        self._notices.record_notice(
            survivor_id=survivor_id,
            consent_id=consent_id,
            version=version,
            partner=partner,
            notice_id=notice_id,
            at=at,
        )
