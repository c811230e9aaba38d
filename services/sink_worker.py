"""``accord sink``: the audit sink, the rejection sink and the referral reply reader, one
worker process for all three.

The decision records go into the audit hash chain (``services/audit/sink.py``), the dead
letters into ``rejected_events`` (``services/broker/edges/rejections.py``): each exactly once, one
database transaction per poll, the database work in a thread (``services/kafka/sink.py``). The
worker connects to Kafka as the ``accord-audit`` principal, which may read only those two topics;
the reply reader as ``accord-referrals``, which may read only the partners' reply topics.
Several workers may run: Kafka's group protocol shares the partitions out among them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.audit import store
from services.audit.signing import appender_key
from services.audit.sink import audit_sink
from services.broker.edges.rejections import rejection_sink
from services.db import make_engine, make_sessionmaker
from services.kafka.client import AUDIT, kafka
from services.kafka.sink import TopicSink
from services.observability.readiness import readiness, sessions_check
from services.referrals import service as referrals
from services.referrals.replies import ReplyReader
from services.settings import Settings

log = logging.getLogger("accord.sink")


def audit_group(s: Settings) -> str:
    return f"{s.relay_group}-audit"


def rejections_group(s: Settings) -> str:
    return f"{s.relay_group}-rejections"


class SinkWorker:
    def __init__(self, s: Settings, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._database = sessions_check(sessions)  # the readiness probe
        conn = kafka(s, AUDIT)
        self.audit = audit_sink(
            conn, s.topic_decisions, audit_group(s), sessions, then=referrals.on_decision
        )
        self.rejections = rejection_sink(conn, s.topic_deadletter, rejections_group(s), sessions)
        self.sinks: dict[str, TopicSink[Any, Any]] = {
            "audit": self.audit,
            "rejections": self.rejections,
        }
        # Partners' referral replies (services/referrals/replies.py), as its own principal.
        self.replies = ReplyReader(s, sessions)
        self.stopped = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Both sinks until ``stop``; if one fails, the other is stopped and the error raised."""
        tasks = [
            asyncio.create_task(sink.run(stop), name=f"{name}-sink")
            for name, sink in self.sinks.items()
        ]
        tasks.append(asyncio.create_task(self.replies.run(stop), name="referral-replies"))
        log.info("sink worker started", extra={"topics": [s.topic for s in self.sinks.values()]})
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.stopped.set()

    async def catch_up(self, timeout_s: float = 30.0) -> None:
        """Wait until both topics, as they stand now, are stored."""
        await asyncio.gather(*(s.catch_up(timeout_s) for s in self.sinks.values()))

    def lag(self) -> dict[str, int]:
        """Records fetched-to-be but not yet stored, per sink."""
        return {name: sink.lag() for name, sink in self.sinks.items()}

    def stored(self) -> dict[str, int]:
        """Records stored since start, per sink (redeliveries not counted)."""
        return {name: sink.stored_total for name, sink in self.sinks.items()}

    async def readiness(self, timeout_s: float = 2.0) -> dict[str, bool]:
        """Kafka and the database reachable, and each sink has partitions assigned and its last
        batch stored. Never blocks the loop: the database is pinged in a thread."""
        kafka_ok = await self.audit.kafka_reachable(timeout_s)
        database = (await readiness({"database": self._database}, timeout_s=timeout_s))["database"]
        ready = {"kafka": kafka_ok, "database": database}
        for name, sink in self.sinks.items():
            ready[f"{name}_assigned"] = sink.assigned()
            ready[f"{name}_storing"] = sink.database_ok
        return ready


@asynccontextmanager
async def running_sinks(
    s: Settings, *, stop: asyncio.Event | None = None
) -> AsyncIterator[SinkWorker]:
    """Run the sink worker (audit and rejection sinks) as a task on the current loop, exactly
    as ``accord sink`` does; stop it on exit (or when ``stop`` is set). An error of the
    worker is raised on exit. It creates no topic: it waits for the relay's."""
    engine = make_engine(s.sqlalchemy_url)
    # The audit sink appends to the chain: its entries are signed with the appender key.
    worker = SinkWorker(s, store.with_appender(make_sessionmaker(engine), appender_key(s)))
    stop = stop or asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="sink-worker")
    try:
        yield worker
    finally:
        stop.set()
        try:
            await task
        finally:
            engine.dispose()
