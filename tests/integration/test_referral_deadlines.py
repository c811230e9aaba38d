"""Referral deadlines on the real stack: the policy's deadlines from the OPA server, breaches
in PostgreSQL, each fired exactly once with its effects (overdue flag, the supervisor's alert,
the proposed next partner, an expiry, an audit entry), in the partner's coverage hours, and
across a real `accord deadlines` process SIGKILLed and restarted, or two running at once.
Time is injected: a clock in the test, or a clock file the worker reads at each pass."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.audit import store
from services.audit.models import AuditEntry
from services.audit.signing import appender_key
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.broker.pipeline.model import Decision
from services.consent.models import Survivor
from services.db import transaction
from services.referrals import service
from services.referrals.deadline_worker import DeadlineWorker, OpaTerms
from services.referrals.models import Referral, ReferralBreach, ReferralChange
from services.referrals.states import Action, Actor, State
from services.registry.models import Agency, Partner
from services.settings import Settings
from tests.support.stack import private_api
from tools.bench.harness import RelayProcess, log_entries

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # a Tuesday
ALLOW = Decision(True, ("service_needs",), (), ("consent",), ("R2",), (), (), False, "rev")
OFFICE = {"kind": "business_hours", "time_zone": "UTC", "days": [1, 2, 3, 4, 5]}


@pytest.fixture(scope="module")
def stack(settings: Settings) -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    s, sessions = private_api(settings, "deadlines")
    sessions = store.with_appender(sessions, appender_key(s))
    with transaction(sessions) as session:
        session.add(Agency(id="dl-agency", name="Deadline agency", jurisdiction="state-a"))
        for pid, coverage in (
            ("dl-shelter-1", None),
            ("dl-shelter-2", None),
            ("dl-office", OFFICE),
        ):
            session.add(
                Partner(
                    id=pid,
                    name=pid,
                    type="shelter" if pid != "dl-office" else "legal_aid",
                    jurisdiction="state-a",
                    vetted=True,
                    public_key="k",
                    coverage=coverage,
                )
            )
    yield s, sessions


def delivered(sessions: sessionmaker[Session], partner: str, at: datetime, tag: str) -> str:
    """A referral made and delivered by the relay's decision at ``at``; its id. The survivor is
    enrolled first (a partner's answer leaves the survivor a notice: docs/safe-contact.md)."""
    with transaction(sessions) as session:
        session.add(Survivor(id=f"sv-{tag}", agency_id="dl-agency", created_at=at))
    with transaction(sessions) as session:
        row = session.get(Partner, partner)
        assert row is not None
        r = service.make(
            session=session,
            agency_id="dl-agency",
            by="dl-agency",
            survivor_id=f"sv-{tag}",
            partner=row,
            addressed_as="partner",
            purpose="service_referral",
            event_id=f"evt-{tag}",
            supersedes=None,
            decision=ALLOW,
            now=at,
        )
        service.on_decision(
            session,
            {
                "event_id": r.event_id,
                "event_type": "accord.referral.made",
                "agency_id": "dl-agency",
                "partner_id": partner,
                "delivery_id": "d-1",
                "outcome": "allow",
                "released": ["service_needs"],
                "withheld": [],
                "reasons": ["R2"],
                "decided_at": at.isoformat(),
            },
        )
        assert r.state == State.DELIVERED.value
        return r.id


def breaches(sessions: sessionmaker[Session], rid: str) -> list[ReferralBreach]:
    with sessions() as session:
        return list(
            session.scalars(
                select(ReferralBreach)
                .where(ReferralBreach.referral_id == rid)
                .order_by(ReferralBreach.id)
            )
        )


def audit_keys(sessions: sessionmaker[Session], rid: str) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(AuditEntry.entry_key)
                .where(AuditEntry.entry_key.like(f"referral-breach:{rid}:%"))
                .order_by(AuditEntry.seq)
            )
        )


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def test_the_policy_s_deadlines_come_from_the_opa_server(
    stack: tuple[Settings, sessionmaker[Session]],
) -> None:
    s, _ = stack
    terms = OpaTerms(s.opa_base_url)
    try:
        plain = await terms("state-a", "shelter")
        urgent = await terms("state-b", "emergency_services")
    finally:
        await terms.aclose()
    assert (plain.acknowledge_hours, plain.answer_hours, plain.expire_hours) == (24, 72, 168)
    assert (urgent.acknowledge_hours, urgent.answer_hours) == (1, 4)
    assert plain.propose_next_partner is True


async def test_each_breach_fires_once_with_its_effects(
    stack: tuple[Settings, sessionmaker[Session]],
) -> None:
    s, sessions = stack
    rid = delivered(sessions, "dl-shelter-1", T0, "once")
    clock = Clock(T0 + timedelta(hours=24) - timedelta(seconds=1))
    terms = OpaTerms(s.opa_base_url)
    worker = DeadlineWorker(s, sessions, terms=terms, clock=clock)
    try:
        assert (await worker.run_pass()).fired == 0
        assert breaches(sessions, rid) == []

        clock.at = T0 + timedelta(hours=24)  # due, inclusive
        assert (await worker.run_pass()).fired == 1
        assert (await worker.run_pass()).fired == 0  # never twice
        (ack,) = breaches(sessions, rid)
        assert (ack.kind, ack.due_at, ack.agency_id) == ("acknowledge", clock.at, "dl-agency")
        assert ack.proposed_partner_id is None  # a late acknowledgement proposes no one yet
        with sessions() as session:
            r = session.get(Referral, rid)
            assert r is not None and r.overdue and r.state == State.DELIVERED.value

        clock.at = T0 + timedelta(hours=72)  # unanswered: the next shelter is proposed
        assert (await worker.run_pass()).fired == 1
        answer = breaches(sessions, rid)[-1]
        assert answer.kind == "answer" and answer.proposed_partner_id == "dl-shelter-2"

        clock.at = T0 + timedelta(hours=168)
        assert (await worker.run_pass()).fired == 1
        with sessions() as session:
            r = session.get(Referral, rid)
            assert r is not None and r.state == State.EXPIRED.value and r.ended_at == clock.at
            last = session.scalars(
                select(ReferralChange)
                .where(ReferralChange.referral_id == rid)
                .order_by(ReferralChange.seq.desc())
            ).first()
            assert last is not None
            assert (last.action, last.actor) == (Action.EXPIRE.value, "deadline")
        assert (await worker.run_pass()).fired == 0  # expired: nothing more is owed
    finally:
        await terms.aclose()
    assert [b.kind for b in breaches(sessions, rid)] == ["acknowledge", "answer", "expire"]
    assert audit_keys(sessions, rid) == [
        f"referral-breach:{rid}:acknowledge",
        f"referral-breach:{rid}:answer",
        f"referral-breach:{rid}:expire",
    ]


async def test_an_answered_referral_fires_nothing(
    stack: tuple[Settings, sessionmaker[Session]],
) -> None:
    s, sessions = stack
    rid = delivered(sessions, "dl-shelter-1", T0, "answered")
    with transaction(sessions) as session:
        partner = service.Party(Actor.PARTNER, "dl-shelter-1", "dl-shelter-1")
        for action in (Action.ACKNOWLEDGE, Action.ACCEPT):
            service.move(
                session=session,
                referral_id=rid,
                action=action,
                party=partner,
                now=T0 + timedelta(hours=1),
            )
    terms = OpaTerms(s.opa_base_url)
    try:
        worker = DeadlineWorker(s, sessions, terms=terms, clock=Clock(T0 + timedelta(days=30)))
        await worker.run_pass()
    finally:
        await terms.aclose()
    assert breaches(sessions, rid) == []


async def test_coverage_hours_decide_when_a_deadline_falls_due(
    stack: tuple[Settings, sessionmaker[Session]],
) -> None:
    """Delivered Friday 16:00 UTC to an office open 09:00-17:00 on weekdays: 24 hours to
    acknowledge end on Wednesday 16:00, not on Saturday."""
    s, sessions = stack
    friday = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
    rid = delivered(sessions, "dl-office", friday, "office")
    clock = Clock(friday + timedelta(hours=24))
    terms = OpaTerms(s.opa_base_url)
    worker = DeadlineWorker(s, sessions, terms=terms, clock=clock)
    try:
        await worker.run_pass()
        assert breaches(sessions, rid) == []
        clock.at = datetime(2026, 12, 9, 15, 59, tzinfo=UTC)
        await worker.run_pass()
        assert breaches(sessions, rid) == []
        clock.at = datetime(2026, 12, 9, 16, 0, tzinfo=UTC)
        await worker.run_pass()
    finally:
        await terms.aclose()
    (ack,) = breaches(sessions, rid)
    assert ack.kind == "acknowledge" and ack.due_at == clock.at


async def test_with_the_policy_unreachable_nothing_fires_until_it_answers(
    stack: tuple[Settings, sessionmaker[Session]],
) -> None:
    s, sessions = stack
    rid = delivered(sessions, "dl-shelter-1", T0, "no-opa")
    clock = Clock(T0 + timedelta(hours=25))
    dead = OpaTerms("http://127.0.0.1:9")  # nothing listens there
    worker = DeadlineWorker(s, sessions, terms=dead, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await task
    await dead.aclose()
    assert worker.last_pass_ok is False and breaches(sessions, rid) == []
    live = OpaTerms(s.opa_base_url)
    try:
        assert (await DeadlineWorker(s, sessions, terms=live, clock=clock).run_pass()).fired >= 1
    finally:
        await live.aclose()
    assert [b.kind for b in breaches(sessions, rid)] == ["acknowledge"]


def _worker(s: Settings, tmp: Path, name: str, clock_file: Path) -> RelayProcess:
    return RelayProcess(
        s,
        tmp / f"{name}.log",
        command="deadlines",
        env={
            "ACCORD_OPA_URL": s.opa_base_url,
            "ACCORD_DEADLINES_CLOCK_FILE": str(clock_file),
            "ACCORD_DEADLINES_INTERVAL_S": "0.2",
            "ACCORD_DEADLINES_HEALTH_PORT": "0",
        },
    )


def _first_pass(p: RelayProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(e.get("msg") == "deadlines: first pass done" for e in log_entries(p.log_file)):
            return
        assert p.alive(), p.log_file.read_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError(p.log_file.read_text()[-3000:])


def _wait_for(predicate: object, timeout_s: float = 60) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_worker_killed_and_restarted_fires_what_fell_due_once(
    stack: tuple[Settings, sessionmaker[Session]], tmp_path: Path
) -> None:
    s, sessions = stack
    rid = delivered(sessions, "dl-shelter-1", T0, "sigkill")
    clock_file = tmp_path / "now"
    clock_file.write_text((T0 + timedelta(hours=1)).isoformat())

    first = _worker(s, tmp_path, "first", clock_file)
    first.start()
    try:
        _first_pass(first)
        assert breaches(sessions, rid) == []
        first.kill()  # SIGKILL; while it is down both the acknowledgement and answer fall due
        clock_file.write_text((T0 + timedelta(hours=100)).isoformat())

        second = _worker(s, tmp_path, "second", clock_file)
        second.start()
        _wait_for(lambda: len(breaches(sessions, rid)) == 2)
        second.kill()

        third = _worker(s, tmp_path, "third", clock_file)
        third.start()
        _first_pass(third)
        _wait_for(lambda: third.log_file.read_text().count("\n") >= 1)
        time.sleep(1.0)  # several more passes at 0.2 s
        third.kill()
        assert [b.kind for b in breaches(sessions, rid)] == ["acknowledge", "answer"]

        # Two workers at once when the expiry falls due: one of them fires it.
        clock_file.write_text((T0 + timedelta(hours=200)).isoformat())
        pair = [_worker(s, tmp_path, f"pair-{i}", clock_file) for i in (1, 2)]
        for p in pair:
            p.start()
        _wait_for(lambda: len(breaches(sessions, rid)) == 3)
        for p in pair:
            _first_pass(p)
        time.sleep(1.0)
        for p in pair:
            p.kill()
    finally:
        for p in (first,):
            p.stop()
    assert [b.kind for b in breaches(sessions, rid)] == ["acknowledge", "answer", "expire"]
    assert len(audit_keys(sessions, rid)) == 3
    with sessions() as session:
        expiries = session.scalar(
            select(func.count())
            .select_from(ReferralChange)
            .where(ReferralChange.referral_id == rid, ReferralChange.action == "expire")
        )
        assert expiries == 1


async def test_supervisors_see_their_agency_s_alerts_and_compliance_the_figures(
    api: str, sessions: sessionmaker[Session]
) -> None:
    """The API over the session's database: a breach of harbor-outreach's referral is an alert
    for its supervisors only; one marks it seen; compliance sees every alert and the report."""
    tag = uuid.uuid4().hex[:8]
    with transaction(sessions) as session:
        session.add(
            Referral(
                id=f"ref-api-{tag}",
                agency_id="harbor-outreach",
                survivor_id=f"sv-api-{tag}",
                partner_id="lighthouse-shelter",
                partner_type="shelter",
                jurisdiction="state-a",
                addressed_as="partner",
                purpose="service_referral",
                event_id=f"evt-api-{tag}",
                state=State.DELIVERED.value,
                made_by="harbor-outreach",
                made_at=T0,
                delivered_at=T0,
                updated_at=T0,
                overdue=True,
            )
        )
        session.flush()
        breach = ReferralBreach(
            referral_id=f"ref-api-{tag}",
            kind="acknowledge",
            agency_id="harbor-outreach",
            partner_id="lighthouse-shelter",
            partner_type="shelter",
            jurisdiction="state-a",
            due_at=T0 + timedelta(hours=24),
            fired_at=T0 + timedelta(hours=24),
        )
        session.add(breach)
        session.flush()
        alert_id = breach.id
        keys = {
            "own": issue_credential(
                session=session,
                role=Role.SUPERVISOR,
                subject=f"sup-{tag}",
                agency_id="harbor-outreach",
            ),
            "other": issue_credential(
                session=session,
                role=Role.SUPERVISOR,
                subject=f"sup-o-{tag}",
                agency_id="valley-school",
            ),
            "compliance": issue_credential(
                session=session, role=Role.COMPLIANCE, subject=f"cmp-{tag}"
            ),
            "partner": issue_credential(
                session=session, role=Role.PARTNER, subject="lighthouse-shelter"
            ),
        }

    def auth(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[who]}"}

    async with httpx.AsyncClient(base_url=api) as http:
        own = (await http.get("/v1/referral-oversight/alerts", headers=auth("own"))).json()
        assert [a["id"] for a in own if a["referral_id"] == f"ref-api-{tag}"] == [alert_id]
        other = (await http.get("/v1/referral-oversight/alerts", headers=auth("other"))).json()
        assert all(a["agency_id"] == "valley-school" for a in other)
        r = await http.post(f"/v1/referral-oversight/alerts/{alert_id}/seen", headers=auth("other"))
        assert r.status_code == 404  # another agency's alert is not this supervisor's
        r = await http.post(f"/v1/referral-oversight/alerts/{alert_id}/seen", headers=auth("own"))
        assert r.status_code == 200 and r.json()["seen_at"] is not None
        unseen = await http.get(
            "/v1/referral-oversight/alerts", params={"unseen": "true"}, headers=auth("own")
        )
        assert alert_id not in [a["id"] for a in unseen.json()]
        everyone = await http.get("/v1/referral-oversight/alerts", headers=auth("compliance"))
        assert alert_id in [a["id"] for a in everyone.json()]
        r = await http.get("/v1/referral-oversight/alerts", headers=auth("partner"))
        assert r.status_code == 403
        report = await http.get("/v1/referral-oversight/report", headers=auth("compliance"))
        assert report.status_code == 200
        body = report.json()
        # One breach and one delivery: far below the threshold, so nothing is shown of them.
        assert body["threshold"] > 1
        assert all(
            row["acknowledge_breaches"] is None or row["acknowledge_breaches"] >= body["threshold"]
            for row in body["rows"]
        )
        r = await http.get("/v1/referral-oversight/report", headers=auth("own"))
        assert r.status_code == 403
