"""Periodic signed checkpoints of the chain head, and retention pruning.

A checkpoint is signed after ``audit_checkpoint_every`` new entries, or once
``audit_checkpoint_interval_s`` has passed with new entries since the last one. With
``audit_retention_days`` set, entries older than that are pruned after a checkpoint at the
last pruned entry, so the remaining chain verifies from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from nacl.signing import SigningKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.audit import store
from services.audit.models import AuditCheckpoint, AuditHead

log = logging.getLogger("accord.audit")


class Checkpointer:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        key: SigningKey,
        *,
        every: int,
        interval_s: float,
        retention_days: int = 0,
    ) -> None:
        self._sessions = sessions
        self._key = key
        self._every = every
        self._interval_s = interval_s
        self._retention = timedelta(days=retention_days) if retention_days else None
        self._last_time = time.monotonic()

    def tick(self, *, force: bool = False) -> int | None:
        """Sign the head if due (or ``force``); returns the checkpoint's seq, if one was made."""
        now = datetime.now(UTC)
        with self._sessions() as session, session.begin():
            head = session.get(AuditHead, store.HEAD_ID)
            last = session.scalar(select(func.max(AuditCheckpoint.seq))) or 0
            if head is None or head.seq <= last:
                return None
            due = head.seq - last >= self._every
            due = due or time.monotonic() - self._last_time >= self._interval_s
            if not (due or force):
                return None
            row = store.checkpoint(session, self._key, now)
        self._last_time = time.monotonic()
        if self._retention is not None:
            with self._sessions() as session, session.begin():
                pruned = store.prune(session, self._key, before=now - self._retention, now=now)
            if pruned:
                log.info("audit entries pruned by retention", extra={"count": pruned})
        return row.seq if row is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        poll = min(self._interval_s, 1.0)
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # keep going; each failure is logged
                log.exception("audit checkpoint failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll)
            except TimeoutError:
                pass
