"""``accord deadlines``: the referral deadline worker, its own process.

Each pass reads the open, delivered referrals, asks OPA for the deadlines of each partner type
and jurisdiction among them (``data.accord.deadlines.deadlines``, rule R12), counts them in the
partner's coverage hours (``coverage.py``) and fires every one that fell due unmet and has not
fired. Firing is one database transaction per breach: the ``referral_breaches`` row (unique per
referral and kind), the referral's overdue flag, the proposal of the next eligible partner of
the same type (when the policy says so), an ``expired`` move for the expiry deadline, and a
chained audit entry. A crash before the commit leaves nothing, so the next pass (or the next
worker, after a restart) fires it; a commit makes a second firing impossible, whoever tries.
A worker that was down fires, when it comes back, everything that fell due meanwhile.

The referring agency's supervisors see the breaches as alerts
(``GET /v1/referral-oversight/alerts``).
If OPA cannot answer, nothing fires that pass: deadlines fire late, never wrongly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.audit import store as audit
from services.audit.signing import appender_key
from services.db import make_engine, make_sessionmaker
from services.observability import metrics
from services.observability.readiness import readiness, sessions_check
from services.referrals import service
from services.referrals.coverage import coverage_of
from services.referrals.deadlines import Deadline, Kind, Terms, fallen_due, owed
from services.referrals.models import Referral, ReferralBreach
from services.referrals.states import Action, Actor, State
from services.registry import models as broker
from services.settings import Settings

log = logging.getLogger("accord.deadlines")

Clock = Callable[[], datetime]
WATCHED = (State.DELIVERED, State.ACKNOWLEDGED)


def system_clock() -> datetime:
    return datetime.now(UTC)


def file_clock(path: Path) -> Clock:
    """Tests only: "now" is the RFC 3339 time in ``path``, read at each call."""

    def now() -> datetime:
        return datetime.fromisoformat(path.read_text().strip().replace("Z", "+00:00"))

    return now


def clock_of(s: Settings) -> Clock:
    return file_clock(Path(s.deadlines_clock_file)) if s.deadlines_clock_file else system_clock


@dataclass(frozen=True)
class Watched:
    """What a pass needs of one open referral."""

    id: str
    state: State
    delivered_at: datetime | None
    partner_type: str
    jurisdiction: str
    coverage: dict[str, Any] | None
    fired: frozenset[Kind]
    overdue: bool


class TermsUnavailable(RuntimeError):
    """OPA did not answer the deadlines query."""


class OpaTerms:
    """The policy's deadlines for (jurisdiction, partner type), asked of the OPA server."""

    def __init__(self, opa_url: str, timeout_s: float = 5.0) -> None:
        self._url = opa_url.rstrip("/") + "/v1/data/accord/deadlines/deadlines"
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def __call__(self, jurisdiction: str, partner_type: str) -> Terms:
        body = {"input": {"jurisdiction": jurisdiction, "partner_type": partner_type}}
        try:
            answer = await self._client.post(self._url, json=body)
            answer.raise_for_status()
            return Terms.of(answer.json()["result"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise TermsUnavailable("the policy's referral deadlines are unavailable") from exc

    async def reachable(self) -> bool:
        try:
            await self("", "")
        except TermsUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass
class Pass:
    """What one pass saw and did."""

    due: int = 0
    fired: int = 0
    pending: int = 0


class DeadlineWorker:
    def __init__(
        self,
        s: Settings,
        sessions: sessionmaker[Session],
        *,
        terms: OpaTerms,
        clock: Clock = system_clock,
    ) -> None:
        self._s = s
        self._sessions = sessions
        self._database = sessions_check(sessions)  # the readiness probe
        self._terms = terms
        self._clock = clock
        self.stopped = asyncio.Event()
        self.last_pass_ok = False
        self.passes = 0

    async def run(self, stop: asyncio.Event) -> None:
        log.info("deadline worker started", extra={"interval_s": self._s.deadlines_interval_s})
        try:
            while not stop.is_set():
                try:
                    done = await self.run_pass()
                    if not self.passes:
                        log.info(
                            "deadlines: first pass done",
                            extra={"fired": done.fired, "pending": done.pending},
                        )
                    self.passes += 1
                    self.last_pass_ok = True
                except TermsUnavailable:
                    self.last_pass_ok = False
                    log.warning("deadlines held: the policy did not answer; nothing fired")
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._s.deadlines_interval_s)
        finally:
            self.stopped.set()

    async def run_pass(self) -> Pass:
        """Fire every deadline that fell due unmet; the database work in threads."""
        watched = await asyncio.to_thread(self._watched)
        terms: dict[tuple[str, str], Terms] = {}
        for key in sorted({(w.jurisdiction, w.partner_type) for w in watched}):
            terms[key] = await self._terms(*key)
        now = self._clock()
        result = Pass()
        due_by_kind = dict.fromkeys(Kind, 0)
        pending_by_kind = dict.fromkeys(Kind, 0)
        for w in watched:
            t = terms[(w.jurisdiction, w.partner_type)]
            deadlines = owed(w.state, w.delivered_at, t, coverage_of(w.coverage))
            for d in deadlines:
                if d.kind not in w.fired and d.due_at > now:
                    pending_by_kind[d.kind] += 1
            # Earliest first: an expiry due with the other two fires after them.
            for d in fallen_due(deadlines, now, set(w.fired)):
                due_by_kind[d.kind] += 1
                if await asyncio.to_thread(self._fire, w.id, d, t, now):
                    result.fired += 1
                    metrics.BREACHES_FIRED.labels(d.kind.value).inc()
        for kind in Kind:
            metrics.DEADLINES_DUE.labels(kind.value).set(0)  # fired (or held: see the log)
            metrics.DEADLINES_PENDING.labels(kind.value).set(pending_by_kind[kind])
        result.due = sum(due_by_kind.values())
        result.pending = sum(pending_by_kind.values())
        metrics.REFERRALS_OVERDUE_OPEN.set(await asyncio.to_thread(self._overdue_open))
        return result

    async def readiness(self) -> dict[str, bool]:
        """The database and OPA reachable, and the last pass completed. Never blocks the loop."""
        database = (await readiness({"database": self._database}))["database"]
        return {
            "database": database,
            "opa": await self._terms.reachable(),
            "last_pass_ok": self.last_pass_ok,
        }

    def _watched(self) -> list[Watched]:
        with self._sessions() as session:
            rows = session.execute(
                select(Referral, broker.Partner.coverage)
                .join(broker.Partner, broker.Partner.id == Referral.partner_id)
                .where(Referral.state.in_([s.value for s in WATCHED]))
            ).all()
            fired: dict[str, set[Kind]] = {}
            if rows:
                for rid, kind in session.execute(
                    select(ReferralBreach.referral_id, ReferralBreach.kind).where(
                        ReferralBreach.referral_id.in_([r.id for r, _ in rows])
                    )
                ):
                    fired.setdefault(rid, set()).add(Kind(kind))
            return [
                Watched(
                    id=r.id,
                    state=State(r.state),
                    delivered_at=r.delivered_at,
                    partner_type=r.partner_type,
                    jurisdiction=r.jurisdiction,
                    coverage=coverage,
                    fired=frozenset(fired.get(r.id, set())),
                    overdue=r.overdue,
                )
                for r, coverage in rows
            ]

    def _overdue_open(self) -> int:
        with self._sessions() as session:
            return len(
                session.scalars(
                    select(Referral.id).where(
                        Referral.overdue.is_(True),
                        Referral.state.in_([s.value for s in WATCHED] + [State.ACCEPTED.value]),
                    )
                ).all()
            )

    def _fire(self, referral_id: str, d: Deadline, terms: Terms, now: datetime) -> bool:
        """One breach, exactly once: False if it no longer applies or was fired already."""
        with self._sessions() as session:
            try:
                with session.begin():
                    return fire(session, referral_id, d, terms, now)
            except IntegrityError:
                return False  # another worker committed it first


def fire(session: Session, referral_id: str, d: Deadline, terms: Terms, now: datetime) -> bool:
    """The breach's effects in the caller's transaction (the referral row locked first)."""
    r = session.scalars(
        select(Referral).where(Referral.id == referral_id).with_for_update()
    ).first()
    if r is None or State(r.state) not in WATCHED:
        return False  # answered, withdrawn or expired meanwhile
    if session.scalar(
        select(ReferralBreach.id).where(
            ReferralBreach.referral_id == r.id, ReferralBreach.kind == d.kind.value
        )
    ):
        return False
    proposed = None
    if terms.propose_next_partner and d.kind is not Kind.ACKNOWLEDGE:
        # An unanswered referral: the next eligible partner of the same type, never one of
        # the partners this referral (or one it re-refers) already went to.
        nxt = service.eligible_partners(
            session=session,
            partner_type=r.partner_type,
            jurisdiction=r.jurisdiction,
            exclude=service.chain_partners(session, r.id),
        )
        proposed = nxt[0].id if nxt else None
    session.add(
        ReferralBreach(
            referral_id=r.id,
            kind=d.kind.value,
            agency_id=r.agency_id,
            partner_id=r.partner_id,
            partner_type=r.partner_type,
            jurisdiction=r.jurisdiction,
            due_at=d.due_at,
            fired_at=now,
            proposed_partner_id=proposed,
        )
    )
    r.overdue = True
    session.flush()  # the unique key decides here, before any other effect
    audit.append(
        session,
        "referral_breach",
        f"referral-breach:{r.id}:{d.kind.value}",
        {
            "referral_id": r.id,
            "kind": d.kind.value,
            "state": r.state,
            "agency_id": r.agency_id,
            "partner_id": r.partner_id,
            "partner_type": r.partner_type,
            "jurisdiction": r.jurisdiction,
            "due_at": audit.ts(d.due_at),
            "fired_at": audit.ts(now),
            "proposed_partner_id": proposed,
        },
    )
    if d.kind is Kind.EXPIRE:
        service.move(
            session=session,
            referral_id=r.id,
            action=Action.EXPIRE,
            party=service.Party(Actor.DEADLINE, "deadline", "accord-deadlines"),
            now=now,
        )
    log.info(
        "referral deadline breached",
        extra={"referral_id": r.id, "kind": d.kind.value, "proposed": proposed is not None},
    )
    return True


@asynccontextmanager
async def running_deadlines(
    s: Settings, *, stop: asyncio.Event | None = None, clock: Clock | None = None
) -> AsyncIterator[DeadlineWorker]:
    """Run the deadline worker as a task on the current loop, exactly as ``accord deadlines``
    does; stop it on exit. Its audit entries are signed with the appender key."""
    engine = make_engine(s.sqlalchemy_url)
    terms = OpaTerms(s.opa_base_url)
    worker = DeadlineWorker(
        s,
        audit.with_appender(make_sessionmaker(engine), appender_key(s)),
        terms=terms,
        clock=clock or clock_of(s),
    )
    stop = stop or asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="deadline-worker")
    try:
        yield worker
    finally:
        stop.set()
        try:
            await task
        finally:
            await terms.aclose()
            engine.dispose()
