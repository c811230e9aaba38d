"""``accord keys …``: KEK status, re-wrap after a rotation, a new KEK, crypto-shredding."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from services.atrest import store
from services.audit import store as audit_store
from services.audit.signing import appender_key
from services.consent.schemas import Consent
from services.db import make_engine, make_sessionmaker, transaction
from services.keys import kek_ring
from services.settings import Settings
from services.snapshot.publisher import mark_for_republish


def new_kek_entry(key_id: str) -> str:
    """An ``id:base64key`` entry for ACCORD_KEKS: 32 random bytes. Shown once; keep it in the
    secret store the processes read their configuration from, never in the repository."""
    if not key_id or ":" in key_id or "," in key_id:
        raise ValueError("a KEK id is non-empty, without ':' or ','")
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def status_command(s: Settings, echo: Callable[[str], None]) -> int:
    """DEKs per KEK; exit 1 while any live DEK is under a KEK other than the active one."""
    ring = kek_ring(s)
    engine = make_engine(s.sqlalchemy_url)
    try:
        with transaction(make_sessionmaker(engine, kek_ring=ring)) as session:
            counts = store.status(session)
    finally:
        engine.dispose()
    echo(f"active KEK {ring.active_id}; configured: {', '.join(sorted(ring.keks))}")
    for kek_id, n in sorted(counts.items()):
        echo(f"{kek_id:<24} {n} data key(s)")
    behind = sum(n for k, n in counts.items() if k not in (ring.active_id, "(erased)"))
    echo("every data key is under the active KEK" if not behind else f"{behind} to re-wrap")
    return 0 if not behind else 1


def rewrap_command(s: Settings, echo: Callable[[str], None], *, batch: int, pause_s: float) -> int:
    """Re-wrap every DEK under the active KEK, ``batch`` per transaction, so services keep
    running (each batch locks only its own rows, briefly); how many were re-wrapped."""
    ring = kek_ring(s)
    engine = make_engine(s.sqlalchemy_url)
    sessions = make_sessionmaker(engine, kek_ring=ring)
    total = 0
    try:
        while True:
            with transaction(sessions) as session:
                n = store.rewrap(session, limit=batch)
            total += n
            if n < batch:
                break
            echo(f"re-wrapped {total}")
            time.sleep(pause_s)
    finally:
        engine.dispose()
    echo(f"re-wrapped {total} data key(s) under KEK {ring.active_id}")
    return total


def erase_command(s: Settings, echo: Callable[[str], None], survivor_id: str, *, by: str) -> int:
    """Erase a survivor: destroy their data keys (what they sealed can no longer be read),
    leaving a tombstone (no new key is ever made for them: nothing new about them is accepted
    or shared), end their consents, and tell every partner that received data under those
    consents to stop further use. Re-running it re-sends the notices; returns the keys
    destroyed. Raises if the notices could not be sent (the erasure itself is committed)."""
    from services.consent import service as consents

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
            # replaces it with a tombstone within seconds (services/consent/publisher.py).
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
    from services.kafka_client import ADMIN, kafka

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
