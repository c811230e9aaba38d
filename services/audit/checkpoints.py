"""The checkpointer worker (``accord audit checkpointer``): verify, then sign and witness.

It alone reads the checkpoint key (services/audit/signing.py) and writes the witness topic
(services/audit/witness.py). At start it fences any earlier checkpointer and reads every
witnessed record; the newest is its anchor. Each tick, when due (``audit_checkpoint_every``
new entries, or ``audit_checkpoint_interval_s`` after new ones), it recomputes the chain from
the anchor to the database's head (links, hashes, searchable columns, appender signatures)
and signs the head only if it follows; otherwise it refuses: an alert in the log, the refusal
counted (services/audit/health.py) and readiness false, until the chain follows again.

With ``audit_retention_days`` set, the oldest entries older than that are pruned, a prefix up
to the newest witnessed head at most, after a signed, witnessed ``prune`` record; a prune
whose deletions did not finish is finished at the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from nacl.signing import VerifyKey
from sqlalchemy.orm import Session, sessionmaker

from services.audit import chain, health, store
from services.audit.chain import BrokenRange, Checkpoint, Reason, Signer
from services.audit.witness import append_file, read_file
from services.settings import Settings

log = logging.getLogger("accord.audit")


class Witness(Protocol):
    """Where records are witnessed (``KafkaWitness``): ``start`` returns those committed."""

    async def start(self) -> list[Checkpoint]: ...

    async def publish(self, record: Checkpoint) -> None: ...

    async def stop(self) -> None: ...


class Refused(RuntimeError):
    """The database's head does not follow from the last witnessed checkpoint."""

    def __init__(self, problem: BrokenRange) -> None:
        super().__init__(
            f"entries {problem.seq}..{problem.through}: {problem.reason}: {problem.detail}"
        )
        self.problem = problem


class Checkpointer:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        signer: Signer,
        appender_key: VerifyKey,
        witness: Witness,
        *,
        every: int,
        interval_s: float,
        retention_days: int = 0,
        witness_file: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._signer = signer
        self._appender_key = appender_key
        self._witness = witness
        self._every = every
        self._interval_s = interval_s
        self._retention_days = retention_days
        self._file = witness_file
        self._clock = clock
        self._records: list[Checkpoint] = []
        self._last_signed = 0.0
        self.task: asyncio.Task[None] | None = None  # set by whoever runs it
        self._lock = asyncio.Lock()  # one tick at a time: each record links to the last

    @classmethod
    def for_settings(
        cls, s: Settings, sessions: sessionmaker[Session], signer: Signer, witness: Witness
    ) -> Checkpointer:
        from services.audit.signing import appender_verify_key
        from services.audit.witness import witness_file

        return cls(
            sessions,
            signer,
            appender_verify_key(s),
            witness,
            every=s.audit_checkpoint_every,
            interval_s=s.audit_checkpoint_interval_s,
            retention_days=s.audit_retention_days,
            witness_file=str(witness_file(s)),
        )

    @property
    def records(self) -> list[Checkpoint]:
        return list(self._records)

    def anchor(self) -> tuple[int, str]:
        """The newest witnessed head (a checkpoint's or a pruning's); genesis before any."""
        if not self._records:
            return 0, chain.GENESIS
        newest = max(self._records, key=lambda r: r.seq)
        return newest.seq, newest.head

    async def start(self) -> None:
        self._records = await self._witness.start()
        _, good = chain.check_witnessed(self._records, self._signer.verify_key)
        if len(good) != len(self._records):
            raise RuntimeError("the witness topic holds records this key did not sign")
        await asyncio.to_thread(self._sync_file)
        self._last_signed = asyncio.get_running_loop().time()
        prune = max(
            (r for r in self._records if r.kind == "prune"), key=lambda r: r.seq, default=None
        )
        if prune is not None:  # finish a pruning witnessed before a crash
            await asyncio.to_thread(self._delete_through, prune.seq)

    def _sync_file(self) -> None:
        """Bring the kept JSON-lines copy up to the topic (it may lag after a crash)."""
        if not self._file:
            return
        path = Path(self._file)
        have = read_file(path)
        if self._records[: len(have)] != have:
            raise RuntimeError(f"the witness file {path} disagrees with the witness topic")
        append_file(path, self._records[len(have) :])

    def _check(self) -> tuple[int, str, BrokenRange | None]:
        """Read the head and recompute the chain from the anchor to it (in a thread)."""
        anchor = self.anchor()
        with self._sessions() as session:
            seq, h = store.head(session)
            if seq < anchor[0]:
                missing = f"entries {seq + 1}..{anchor[0]} are witnessed but gone"
                return seq, h, _range(seq + 1, anchor[0], missing, "deleted")
            entries = store.iter_entries(session, after=anchor[0] - 1, through=seq)
            problem = chain.follows(anchor, entries, self._appender_key)
            if problem is None and seq > anchor[0]:
                if store.entry_hash_at(session, seq) != h:
                    problem = _range(seq, seq, "audit_head does not name the last entry's hash")
        return seq, h, problem

    async def tick(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the head if due (or ``force``) and it follows; returns the record witnessed.
        Raises ``Refused`` when it does not follow."""
        async with self._lock:
            return await self._tick(force)

    async def _tick(self, force: bool) -> Checkpoint | None:
        seq, h, problem = await asyncio.to_thread(self._check)
        if problem is not None:
            health.refused(problem)
            log.error(
                "AUDIT ALERT: refusing to sign a head that does not follow the witnessed one",
                extra={
                    "first_seq": problem.seq,
                    "through": problem.through,
                    "reason": problem.reason,
                },
            )
            raise Refused(problem)
        health.following()
        anchor_seq = self.anchor()[0]
        loop = asyncio.get_running_loop()
        due = seq - anchor_seq >= self._every
        due = due or loop.time() - self._last_signed >= self._interval_s
        record = None
        if seq > anchor_seq and (due or force):
            record = await self._publish(kind="checkpoint", seq=seq, head=h)
            self._last_signed = loop.time()
        if self._retention_days:
            await self._prune()
        return record

    async def _publish(self, **fields: object) -> Checkpoint:
        prev = self._records[-1].digest() if self._records else chain.GENESIS
        record = chain.sign_checkpoint(
            self._signer,
            prev=prev,
            at=store.ts(self._clock()),
            count=int(fields["seq"]),  # type: ignore[call-overload]
            **fields,  # type: ignore[arg-type]
        )
        await self._witness.publish(record)  # first: nothing is trusted until witnessed
        self._records.append(record)
        health.signed(record.seq)
        if self._file:
            await asyncio.to_thread(append_file, Path(self._file), [record])
        return record

    async def _prune(self) -> None:
        before = self._clock() - timedelta(days=self._retention_days)
        floor = max((r.seq for r in self._records if r.kind == "prune"), default=0)
        witnessed = self.anchor()[0]

        def find() -> tuple[int, str] | None:
            with self._sessions() as session:
                # Never the newest witnessed head itself: it stays the anchor new entries link to.
                through = store.prunable(session, before=before, after=floor, limit=witnessed - 1)
                if through is None:
                    return None
                h = store.entry_hash_at(session, through)
                return (through, h) if h is not None else None

        found = await asyncio.to_thread(find)
        if found is None:
            return
        through, h = found
        await self._publish(
            kind="prune",
            seq=through,
            head=h,
            retention_days=self._retention_days,
            before=store.ts(before),
        )
        deleted = await asyncio.to_thread(self._delete_through, through)
        log.info("audit entries pruned by retention", extra={"count": deleted, "through": through})

    def _delete_through(self, through: int) -> int:
        with self._sessions() as session, session.begin():
            return store.delete_through(session, through)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop``; a refusal keeps it running (and unready) so that the chain,
        once restored, is signed again; being fenced by a newer checkpointer ends it."""
        from aiokafka.errors import ProducerFenced

        poll = min(self._interval_s, 1.0)
        while not stop.is_set():
            try:
                await self.tick()
            except Refused:
                pass  # logged, counted; readiness is false
            except ProducerFenced:
                log.error("another checkpointer took over (fenced): stopping")
                raise
            except Exception:  # keep going; each failure is logged
                log.exception("audit checkpoint failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll)
            except TimeoutError:
                pass


def _range(seq: int, through: int, detail: str, reason: Reason = "altered") -> BrokenRange:
    return BrokenRange(seq=seq, through=max(seq, through), reason=reason, detail=detail)
