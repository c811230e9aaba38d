"""``accord notices``: the notice gate's dispatcher as a worker.

Every ``interval_s`` (``NoticeWorker``) it decides the notices that fell due
(``gate.dispatch_due``): sent, held until the next safe time, suppressed or withdrawn, each in
its own transaction. A notice is decided exactly once whatever happens to the worker: one
killed mid-way leaves the notice it held undecided (rolled back) and the next run decides it;
one down for a while decides on restart what fell due meanwhile (a renewal notice late rather
than never). The clock is injected, so tests move time instead of waiting.

The worker runs on an event loop beside its health port (``/healthz``, ``/readyz``,
``/metrics``); each round runs in a thread, since the gate's database calls block, and
``readiness`` says whether the database answers and the last round completed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from services.contact import renewal  # noqa: F401  (registers the renewal notice's check)
from services.contact.gate import Dispatched, NoticeTransport, dispatch_due
from services.contact.service import read_preference
from services.observability.metrics import NOTICE_ROUNDS_FAILED, NOTICES_DECIDED
from services.observability.readiness import readiness, sessions_check

log = logging.getLogger("accord.contact.worker")


def utcnow() -> datetime:
    return datetime.now(UTC)


def once(
    sessions: sessionmaker[Session],
    *,
    clock: Callable[[], datetime] = utcnow,
    transport: NoticeTransport | None = None,
) -> Dispatched:
    """Decide everything due now, in rounds of 100, until nothing is left."""
    total = Dispatched()
    while True:
        done = dispatch_due(sessions, now=clock(), transport=transport, preference=read_preference)
        total.sent += done.sent
        total.held += done.held
        total.suppressed += done.suppressed
        total.withdrawn += done.withdrawn
        total.failed += done.failed
        for outcome in ("sent", "held", "suppressed", "withdrawn", "failed"):
            NOTICES_DECIDED.labels(outcome).inc(getattr(done, outcome))
        if done.decided == 0:
            return total


class NoticeWorker:
    """``accord notices`` as a long-running worker: a round every ``interval_s`` until ``stop``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        interval_s: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
        transport: NoticeTransport | None = None,
    ) -> None:
        self._sessions = sessions
        self._database = sessions_check(sessions)  # the readiness probe
        self._interval_s = interval_s
        self._clock = clock
        self._transport = transport
        self.last_round_ok = False

    async def serve(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(
                    once, self._sessions, clock=self._clock, transport=self._transport
                )
                self.last_round_ok = True
            except Exception:
                self.last_round_ok = False
                NOTICE_ROUNDS_FAILED.inc()
                log.exception("notice dispatch failed; retrying")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
            except TimeoutError:
                pass

    async def readiness(self) -> dict[str, bool]:
        """The database reachable (``database_check``: in a thread, one probe at a time) and
        the last round completed. Never blocks the loop."""

        async def last_round_ok() -> bool:
            return self.last_round_ok

        return await readiness({"database": self._database, "last_round_ok": last_round_ok})
