"""The accounting of disclosures (R14), behind one interface.

Until the audit store lands, disclosures are kept in a SQL table filled from the relay's
decision records by ``sink_decisions``. Only field names and categories, never values.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
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

    def recipients_under(self, consent_id: str) -> list[tuple[str, str]]:
        with self._sessions() as session:
            rows = session.scalars(
                select(models.Disclosure).where(models.Disclosure.kind == "release")
            )
            found = {
                (r.partner_id, r.partner_type)
                for r in rows
                if any(c.get("id") == consent_id for c in r.consents)
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
        with self._sessions() as session, session.begin():
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


def disclosure_from_record(record: dict[str, Any]) -> models.Disclosure | None:
    """A decision record that released something becomes one disclosure; others none."""
    if not record.get("released"):
        return None
    return models.Disclosure(
        survivor_id=record["survivor_id"],
        kind="release",
        event_id=record["event_id"],
        event_type=record["event_type"],
        partner_id=record["partner_id"],
        partner_type=record["partner_type"],
        purpose=record["purpose"],
        fields=list(record["released"]),
        basis=list(record["basis"]),
        consents=list(record.get("consents", [])),
        at=datetime.fromisoformat(record["decided_at"].replace("Z", "+00:00")),
    )


class DecisionSink:
    """Copies releases from the decision topic into the disclosures table.

    Offsets are committed after the database commit; a redelivered record hits the unique
    (event, partner, kind) constraint and is skipped, so each release is stored once.
    ``catch_up`` waits until everything on the topic when it was called is stored.
    """

    def __init__(
        self, bootstrap: str, topic: str, group: str, sessions: sessionmaker[Session]
    ) -> None:
        self._sessions = sessions
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        self._done: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
                for tp, records in batch.items():
                    for rec in records:
                        self._store(rec.value)
                    self._done[tp] = records[-1].offset + 1
                if batch:
                    await self._consumer.commit()
                for tp in self._consumer.assignment():
                    self._done[tp] = max(self._done.get(tp, 0), await self._consumer.position(tp))
                async with self._progress:
                    self._progress.notify_all()
        finally:
            await self._consumer.stop()

    def _store(self, value: bytes | None) -> None:
        row = disclosure_from_record(json.loads(value)) if value else None
        if row is None:
            return
        try:
            with self._sessions() as session, session.begin():
                session.add(row)
        except IntegrityError:
            pass  # already stored

    async def catch_up(self, timeout_s: float = 10.0) -> None:
        assigned = self._consumer.assignment()
        ends = await self._consumer.end_offsets(list(assigned)) if assigned else {}

        def reached() -> bool:
            return all(self._done.get(tp, 0) >= end for tp, end in ends.items())

        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(reached)
