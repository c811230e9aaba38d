"""``accord notices``: the notice gate's dispatcher as a worker.

Every ``interval_s`` it decides the notices that fell due (``gate.dispatch_due``): sent,
held until the next safe time, suppressed or withdrawn, each in its own transaction. A
notice is decided exactly once whatever happens to the worker: one killed mid-way leaves the
notice it held undecided (rolled back) and the next run decides it; one down for a while
decides on restart what fell due meanwhile (a renewal notice late rather than never). The
clock is injected, so tests move time instead of waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from services.contact import renewal  # noqa: F401  (registers the renewal notice's check)
from services.contact.gate import Dispatched, NoticeTransport, dispatch_due
from services.contact.service import read_preference

log = logging.getLogger("accord.contact.worker")


def utcnow() -> datetime:
    return datetime.now(UTC)


def run(
    sessions: sessionmaker[Session],
    *,
    stop: threading.Event,
    interval_s: float = 30.0,
    clock: Callable[[], datetime] = utcnow,
    transport: NoticeTransport | None = None,
) -> None:
    """Dispatch until ``stop`` is set; a failed round (the database away) is logged and tried
    again at the next interval."""
    while not stop.is_set():
        try:
            once(sessions, clock=clock, transport=transport)
        except Exception:
            log.exception("notice dispatch failed; retrying")
        stop.wait(interval_s)


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
        if done.decided == 0:
            return total
