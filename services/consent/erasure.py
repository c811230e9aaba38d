"""``accord keys erase``: a survivor's erasure, which reaches across domains: their data keys
are destroyed (crypto-shredding, ``services/atrest/store.py``), their consents end, and every
partner that received data under those consents is told to stop further use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from services.atrest import store
from services.atrest.keys import kek_ring
from services.audit import store as audit_store
from services.audit.signing import appender_key
from services.consent import service as consents
from services.consent.models import mark_for_republish
from services.consent.schemas import Consent
from services.db import make_engine, make_sessionmaker, transaction
from services.settings import Settings


def erase_command(s: Settings, echo: Callable[[str], None], survivor_id: str, *, by: str) -> int:
    """Erase a survivor: destroy their data keys (what they sealed can no longer be read),
    leaving a tombstone (no new key is ever made for them: nothing new about them is accepted
    or shared), end their consents, and tell every partner that received data under those
    consents to stop further use. Re-running it re-sends the notices; returns the keys
    destroyed. Raises if the notices could not be sent (the erasure itself is committed)."""
    engine = make_engine(s.sqlalchemy_url)
    now = datetime.now(UTC)
    try:
        sessions = audit_store.with_appender(
            make_sessionmaker(engine, kek_ring=kek_ring(s)), appender_key(s)
        )
        with transaction(sessions) as session:
            n = store.erase(session, survivor_id, by=by, now=now)
            ended = consents.end_for_erasure(
                session=session, survivor_id=survivor_id, by=by, now=now
            )
            # The consent snapshot on Kafka was sealed with the destroyed key: the API
            # replaces it with a tombstone within seconds (services/snapshot/publisher.py).
            mark_for_republish(session, survivor_id)
        echo(f"destroyed {n} data key(s) of survivor {survivor_id}; {len(ended)} consent(s) ended")
        with sessions() as session:
            to_notify = consents.ended_by_erasure(session=session, survivor_id=survivor_id)
        sent = asyncio.run(_notify(s, sessions, to_notify))
        echo(f"consent.revoked notices sent to {len(sent)} earlier recipient(s)")
    finally:
        engine.dispose()
    return n


async def _notify(s: Settings, sessions: sessionmaker[Session], ended: list[Consent]) -> list[str]:
    """The notices, as the operator's tools connect (the super user: `accord kafka ...`)."""
    from aiokafka import AIOKafkaProducer

    from services import policy_data
    from services.consent.audit_disclosures import AuditDisclosureLog
    from services.consent.notices import send_notices
    from services.kafka.client import ADMIN, kafka

    disclosures = AuditDisclosureLog(sessions, policy_data.categorizer(s.policies_dir))
    producer = AIOKafkaProducer(**kafka(s, ADMIN).kwargs(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent: list[str] = []
        for consent in ended:
            sent += await send_notices(producer, s, disclosures, consent)
        return sent
    finally:
        await producer.stop()
