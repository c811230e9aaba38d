"""Publishes each survivor's consent snapshot, sealed to the survivor, to the compacted topic
the relay reads.

A change is acknowledged to the survivor only after Kafka has the snapshot (``acks=all``), so
the relay, which catches up on this topic before every batch, applies it to every event it
processes after the acknowledgement (R3). Snapshots that could not be published are found by
``published_seq < change_seq`` and republished by ``republish_pending``.
"""

from __future__ import annotations

import asyncio
import json

from aiokafka import AIOKafkaProducer
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.atrest import store
from services.broker.pipeline.model import SurvivorFacts
from services.consent import models
from services.snapshot.build import Snapshot, snapshot


def encode(snap: Snapshot) -> bytes:
    doc = {
        "survivor_id": snap.survivor_id,
        "seq": snap.seq,
        "consents": snap.consents,
        "declarations": snap.declarations,
        "court_orders": snap.court_orders,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


class ConsentPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(self, survivor_id: str, record: bytes | None) -> None:
        """A sealed snapshot, or None: a tombstone (the survivor was erased)."""
        await self._producer.send_and_wait(self._topic, record, key=survivor_id.encode())


def mark_published(*, session: Session, survivor_id: str, seq: int) -> None:
    session.execute(
        update(models.Survivor)
        .where(models.Survivor.id == survivor_id, models.Survivor.published_seq < seq)
        .values(published_seq=seq)
    )


async def publish_committed(
    sessions: sessionmaker[Session], publisher: ConsentPublisher, survivor_id: str
) -> None:
    """Publish the survivor's snapshot as committed now, then record that it was published.
    The database work runs in a thread, never on the event loop."""

    def sealed() -> tuple[Snapshot, bytes | None]:
        with sessions() as session:
            survivor = session.get(models.Survivor, survivor_id)
            assert survivor is not None
            snap = snapshot(session=session, survivor=survivor)
            # Sealed to the survivor (services/atrest/sealed.py): the broker holds only ids.
            # An erased survivor's snapshot is a tombstone: compaction removes the last one the
            # relay had, and its view drops the survivor (no consents, no legal bases).
            record: bytes | None
            try:
                record = store.seal_snapshot(session, encode(snap), survivor_id=survivor_id)
            except store.SurvivorErased:
                record = None
            session.commit()  # the survivor's data key, if this created it
        return snap, record

    def published(seq: int) -> None:
        with sessions() as session, session.begin():
            mark_published(session=session, survivor_id=survivor_id, seq=seq)

    snap, record = await asyncio.to_thread(sealed)
    await publisher.publish(survivor_id, record)
    await asyncio.to_thread(published, snap.seq)


def _pending(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(models.Survivor.id).where(
                    models.Survivor.published_seq < models.Survivor.change_seq
                )
            )
        )


async def republish_pending(sessions: sessionmaker[Session], publisher: ConsentPublisher) -> int:
    pending = await asyncio.to_thread(_pending, sessions)  # off the loop, as every query here
    for survivor_id in pending:
        await publish_committed(sessions, publisher, survivor_id)
    return len(pending)


class Snapshots:
    """What the consent and legal views need of snapshots (``services.consent.views.Snapshots``):
    publish one survivor's as committed, and the facts the relay would read (the preview)."""

    def __init__(self, sessions: sessionmaker[Session], publisher: ConsentPublisher) -> None:
        self._sessions = sessions
        self._publisher = publisher

    async def publish(self, survivor_id: str) -> None:
        await publish_committed(self._sessions, self._publisher, survivor_id)

    def facts(self, *, session: Session, survivor: models.Survivor) -> SurvivorFacts:
        return snapshot(session=session, survivor=survivor).facts
