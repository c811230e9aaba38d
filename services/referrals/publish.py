"""Each committed change of a referral, published once it is in the database: its CloudEvent
on the referrals topic (keyed by referral id, so one referral's changes stay in order), and the
delivery, withdrawal or expiry of a referral the partner received also on the partner's topic,
unsealed like ``consent.revoked`` notices (ids and codes only); so is its delivery, which
tells the partner the referral id of the payload it received (``event_id``).

At least once: a change is marked published after Kafka holds it (``acks=all``); changes left
unpublished (Kafka away, a crash) are sent by the next ``publish_pending`` (the API runs it
after every change and every few seconds). Consumers tell a repeat by the event ``id``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.kafka import topics
from services.kafka.client import API, kafka
from services.referrals import events, service
from services.referrals.models import ReferralChange
from services.settings import Settings

Outgoing = list[tuple[int, str, bytes, bytes]]  # change row id, topic, key, value


def _pending(sessions: sessionmaker[Session], s: Settings) -> Outgoing:
    out: Outgoing = []
    with sessions() as session:
        for r, c in service.unpublished(session):
            doc = events.cloudevent(r, c)
            value = events.encode(doc)
            out.append((c.id, s.topic_referrals, r.id.encode(), value))
            if c.target in events.TOLD_PARTNER and r.delivered_at is not None:
                copy = events.encode(events.for_partner(doc))
                out.append((c.id, s.partner_topic(r.partner_id), r.survivor_id.encode(), copy))
    return out


def _mark(sessions: sessionmaker[Session], ids: list[int]) -> None:
    with sessions() as session, session.begin():
        session.execute(
            update(ReferralChange).where(ReferralChange.id.in_(ids)).values(published=True)
        )


class ReferralPublisher:
    def __init__(self, producer: Any, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._producer = producer
        self._s = settings
        self._sessions = sessions
        self._topic_ready = False
        self._lock = asyncio.Lock()

    async def _ensure_topic(self) -> None:
        if not self._topic_ready:
            await topics.ensure_topics(kafka(self._s, API), [topics.referrals_topic(self._s)])
            self._topic_ready = True

    async def publish_pending(self) -> int:
        """Send every unpublished change; returns how many changes were sent."""
        async with self._lock:  # one sender at a time: a change is sent once per pass
            outgoing = await asyncio.to_thread(_pending, self._sessions, self._s)
            if not outgoing:
                return 0
            await self._ensure_topic()
            for _, topic, key, value in outgoing:
                await self._producer.send_and_wait(topic, value, key=key)
            ids = sorted({row for row, *_ in outgoing})
            await asyncio.to_thread(_mark, self._sessions, ids)
            return len(ids)
