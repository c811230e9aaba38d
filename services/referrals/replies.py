"""Kafka partners move their referrals by writing to a reply topic of their own.

Each partner may write one topic, ``accord.replies.<partner id>`` (``Settings.reply_topic``),
and nothing else: no other principal writes it (services/kafka/acls.py), so a reply's topic *is*
its author, and a partner never needs write access to any topic but its own. A reply is a JSON
object ``{"referral_id": "ref-…", "action": "acknowledge", "code": null, "note": null}``
(the actions and codes of ``POST /v1/referrals/{id}/{action}``), keyed by the referral id.

The reader runs in ``accord sink`` as its own principal (``accord-referrals``: read the reply
topics, one group), and applies each reply as that partner's move, one savepoint per reply in
the poll's transaction; offsets are committed after the database commit. A reply refused (not
a referral delivered to that partner, not a move from its state, a bad code) is skipped and
counted by the reason's status, never logged with what it held; the partner sees the state
unchanged (``GET /v1/referrals/{id}``, no ``accord.referral_state`` event). A reply read again
after a crash is refused as a move already made (409): moves are idempotent by their states.
The changes' CloudEvents are published by the API's background pass, as for HTTP moves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from sqlalchemy.orm import Session, sessionmaker

from services.kafka.client import REFERRALS, kafka
from services.observability.metrics import REFERRAL_REPLIES
from services.referrals import service
from services.referrals.service import Party, ReferralError
from services.referrals.states import Action, Actor
from services.settings import Settings

log = logging.getLogger("accord.referrals.replies")

PARTY_ACTIONS = frozenset(
    {Action.ACKNOWLEDGE, Action.ACCEPT, Action.DECLINE, Action.COMPLETE, Action.CLOSE}
)


@dataclass(frozen=True)
class Reply:
    partner_id: str
    referral_id: str
    action: Action
    code: str | None
    note: str | None


def replies_group(s: Settings) -> str:
    return f"{s.relay_group}-referral-replies"


def parse(record: ConsumerRecord, prefix: str) -> Reply | str:
    """The reply, or why it is not one (a reason code: never its content)."""
    partner_id = str(record.topic).removeprefix(prefix)
    try:
        doc = json.loads(record.value or b"")
    except (ValueError, RecursionError):
        return "malformed"
    if not isinstance(doc, dict):
        return "malformed"
    referral_id, action = doc.get("referral_id"), doc.get("action")
    code, note = doc.get("code"), doc.get("note")
    if not isinstance(referral_id, str) or not isinstance(action, str):
        return "malformed"
    if action not in {a.value for a in PARTY_ACTIONS}:
        return "not_a_partner_action"
    if not (code is None or isinstance(code, str)) or not (note is None or isinstance(note, str)):
        return "malformed"
    return Reply(partner_id, referral_id, Action(action), code, note)


def apply(session: Session, reply: Reply, now: datetime) -> str:
    """Apply one reply in its own savepoint; the outcome ("applied", or a status)."""
    try:
        with session.begin_nested():
            service.move(
                session=session,
                referral_id=reply.referral_id,
                action=reply.action,
                party=Party(Actor.PARTNER, reply.partner_id, reply.partner_id),
                code=reply.code,
                note=reply.note,
                now=now,
            )
    except ReferralError as exc:
        return str(exc.status)
    return "applied"


class ReplyReader:
    """Reads every partner's reply topic (by pattern: a partner provisioned later is picked up
    within ``metadata_max_age_ms``) and applies the replies."""

    def __init__(self, s: Settings, sessions: sessionmaker[Session]) -> None:
        self._s = s
        self._sessions = sessions
        self._prefix = s.referral_reply_topic_prefix
        self._consumer = AIOKafkaConsumer(
            **kafka(s, REFERRALS).kwargs(),
            group_id=replies_group(s),
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
        )
        self.applied = 0

    def _store(self, records: list[ConsumerRecord]) -> list[str]:
        outcomes: list[str] = []
        with self._sessions() as session, session.begin():
            for record in records:
                reply = parse(record, self._prefix)
                if isinstance(reply, str):
                    outcomes.append(reply)
                    continue
                outcomes.append(apply(session, reply, datetime.now(UTC)))
        return outcomes

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        try:
            self._consumer.subscribe(pattern=f"^{re.escape(self._prefix)}[a-z0-9][a-z0-9-]*$")
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200, max_records=200)
                records = [r for rs in batch.values() for r in rs]
                if not records:
                    continue
                outcomes = await asyncio.to_thread(self._store, records)
                for outcome in outcomes:
                    REFERRAL_REPLIES.labels(outcome).inc()
                    if outcome != "applied":
                        log.warning("referral reply refused", extra={"outcome": outcome})
                self.applied += outcomes.count("applied")
                await self._consumer.commit()
        finally:
            await self._consumer.stop()
