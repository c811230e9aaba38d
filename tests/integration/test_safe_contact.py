"""The notice gate on PostgreSQL: every notice type to a survivor with "do not contact" is
suppressed, safe times hold notices, each notice is decided exactly once (a crash mid-way
included), renewal notices for time-limited consents, preferences sealed at rest
(docs/safe-contact.md). Time is injected: nothing here waits for the clock."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.atrest import store as atrest
from services.consent import models as consent_models
from services.consent import service as consents
from services.consent.schemas import ConsentIn, RecordedBy
from services.consent.time_limits import time_limited
from services.contact import gate, models, service
from services.contact.gate import NoticeType, Status, dispatch_due, enqueue
from services.contact.renewal import schedule_renewal
from services.contact.schemas import Channel, ContactPreferenceIn
from services.db import transaction
from services.policy_data import ConsentLimits
from services.settings import Settings
from tests.support.api_process import api_env
from tests.support.stack import free_port

pytestmark = pytest.mark.integration

# Wednesday 2 December 2026, 12:00 in Chicago (UTC-6).
NOON = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
LIMITS = ConsentLimits(max_duration=timedelta(days=365), renewal_notice=timedelta(days=30))
CONTACTABLE = ContactPreferenceIn.model_validate(
    {
        "channels": ["phone_call", "email"],
        "safe_times": [
            {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "10:00", "end": "14:00"}
        ],
        "time_zone": "America/Chicago",
        "code_word": "bluebird-canary-7",
    }
)
DO_NOT_CONTACT = ContactPreferenceIn(do_not_contact=True)


class Recorder:
    """A transport that records what it was asked to deliver to one survivor (and can fail, as
    a crash). The outbox is shared by every test, so notices other tests left due are delivered
    too; only the survivor's own are recorded."""

    def __init__(self, survivor: str, fail: bool = False) -> None:
        self.survivor = survivor
        self.delivered: list[tuple[str, Channel | None]] = []
        self.fail = fail

    def deliver(
        self, session: Session, notice: models.SurvivorNotice, channel: Channel | None
    ) -> None:
        if self.fail:
            raise RuntimeError("the transport went down mid-delivery")
        if notice.survivor_id == self.survivor:
            self.delivered.append((notice.id, channel))


@pytest.fixture
def survivor(sessions: sessionmaker[Session]) -> Iterator[str]:
    sid = f"sv-contact-{uuid.uuid4().hex[:8]}"
    with transaction(sessions) as session:
        consents.register_survivor(
            session=session, survivor_id=sid, agency_id="harbor-outreach", now=NOON
        )
    yield sid
    with transaction(sessions) as session:  # leave the shared outbox as it was found
        for n in session.scalars(
            select(models.SurvivorNotice).where(models.SurvivorNotice.survivor_id == sid)
        ):
            if n.status in gate.OPEN:
                n.status = Status.WITHDRAWN.value


def prefer(sessions: sessionmaker[Session], sid: str, pref: ContactPreferenceIn) -> None:
    with transaction(sessions) as session:
        service.save(session=session, survivor_id=sid, data=pref, by="adv-test", now=NOON)


def one_of_each(sessions: sessionmaker[Session], sid: str) -> list[str]:
    with transaction(sessions) as session:
        return [
            enqueue(
                session,
                survivor_id=sid,
                type=kind,
                dedupe_key=f"test:{sid}:{kind.value}",
                about={"test": kind.value},
                now=NOON,
            ).id
            for kind in NoticeType
        ]


def statuses(sessions: sessionmaker[Session], ids: list[str]) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        rows = session.scalars(
            select(models.SurvivorNotice).where(models.SurvivorNotice.id.in_(ids))
        )
        return {r.id: (r.status, r.reason) for r in rows}


def dispatch(sessions: sessionmaker[Session], at: datetime, transport: Any) -> gate.Dispatched:
    return dispatch_due(
        sessions, now=at, transport=transport, limit=1000, preference=service.read_preference
    )


@pytest.fixture
def every_notice_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the gate itself does, whatever each type's own check would say of a test row."""
    import services.contact.renewal
    import services.referrals.notices  # noqa: F401  (registered first, then set aside)

    monkeypatch.setattr(gate, "_APPLIES", {})


@pytest.mark.usefixtures("every_notice_applies")
def test_a_survivor_with_do_not_contact_gets_no_notice_of_any_type(
    sessions: sessionmaker[Session], survivor: str
) -> None:
    assert len(NoticeType) >= 2  # iterated: a type added later is covered without a change
    prefer(sessions, survivor, DO_NOT_CONTACT)
    ids = one_of_each(sessions, survivor)
    transport = Recorder(survivor)
    for at in (NOON, NOON + timedelta(hours=7), NOON + timedelta(days=40)):  # again, later
        dispatch(sessions, at, transport)
    assert transport.delivered == []
    assert set(statuses(sessions, ids).values()) == {("suppressed", "do_not_contact")}


@pytest.mark.usefixtures("every_notice_applies")
def test_the_same_notices_reach_a_contactable_survivor_once_on_their_channel(
    sessions: sessionmaker[Session], survivor: str
) -> None:
    """The control of the test above: the same notices, a preference that allows them."""
    prefer(sessions, survivor, CONTACTABLE)
    ids = one_of_each(sessions, survivor)
    transport = Recorder(survivor)
    dispatch(sessions, NOON, transport)
    dispatch(sessions, NOON + timedelta(minutes=1), transport)
    assert sorted(transport.delivered) == sorted((i, Channel.PHONE_CALL) for i in ids)
    assert set(statuses(sessions, ids).values()) == {("sent", None)}


@pytest.mark.usefixtures("every_notice_applies")
def test_outside_safe_times_a_notice_is_held_and_a_later_do_not_contact_still_wins(
    sessions: sessionmaker[Session], survivor: str
) -> None:
    prefer(sessions, survivor, CONTACTABLE)
    ids = one_of_each(sessions, survivor)
    evening = NOON + timedelta(hours=5)  # 17:00 in Chicago
    transport = Recorder(survivor)
    dispatch(sessions, evening, transport)
    assert transport.delivered == []
    assert set(statuses(sessions, ids).values()) == {("held", "outside_safe_times")}
    with sessions() as session:
        due = {n.due_at for n in session.scalars(
            select(models.SurvivorNotice).where(models.SurvivorNotice.id.in_(ids)))}  # fmt: skip
    assert due == {datetime(2026, 12, 3, 16, 0, tzinfo=UTC)}  # Thursday 10:00 in Chicago
    dispatch(sessions, evening + timedelta(hours=3), transport)  # still night: nothing due
    assert transport.delivered == []
    prefer(sessions, survivor, DO_NOT_CONTACT)  # the survivor changed their mind overnight
    dispatch(sessions, datetime(2026, 12, 3, 16, 0, tzinfo=UTC), transport)
    assert transport.delivered == []
    assert set(statuses(sessions, ids).values()) == {("suppressed", "do_not_contact")}


@pytest.mark.usefixtures("every_notice_applies")
def test_a_crash_mid_delivery_leaves_the_notice_to_be_sent_once_later(
    sessions: sessionmaker[Session], survivor: str
) -> None:
    prefer(sessions, survivor, CONTACTABLE)
    ids = one_of_each(sessions, survivor)
    done = dispatch(sessions, NOON, Recorder(survivor, fail=True))
    assert done.failed >= len(ids)  # each notice's transaction rolled back, the next one tried
    assert {s for s, _ in statuses(sessions, ids).values()} == {"pending"}
    transport = Recorder(survivor)
    dispatch(sessions, NOON, transport)  # a failed notice waits before it is tried again
    assert transport.delivered == []
    for _ in range(3):  # a restarted dispatcher, run again and again
        dispatch(sessions, NOON + gate.RETRY_AFTER, transport)
    assert sorted(i for i, _ in transport.delivered) == sorted(ids)


def test_enqueuing_the_same_cause_twice_keeps_one_notice(
    sessions: sessionmaker[Session], survivor: str
) -> None:
    with transaction(sessions) as session:
        a = enqueue(session, survivor_id=survivor, type=NoticeType.IMMINENT_DANGER_DECLARED,
                    dedupe_key=f"twice:{survivor}", about={}, now=NOON)  # fmt: skip
    with transaction(sessions) as session:
        b = enqueue(session, survivor_id=survivor, type=NoticeType.IMMINENT_DANGER_DECLARED,
                    dedupe_key=f"twice:{survivor}", about={}, now=NOON)  # fmt: skip
    assert a.id == b.id


def test_an_erased_survivor_gets_no_notice_and_their_preference_reads_as_none(
    sessions: sessionmaker[Session], survivor: str
) -> None:
    prefer(sessions, survivor, CONTACTABLE)
    with transaction(sessions) as session:
        notice = enqueue(session, survivor_id=survivor, type=NoticeType.IMMINENT_DANGER_DECLARED,
                         dedupe_key=f"erased:{survivor}", about={}, now=NOON)  # fmt: skip
        atrest.erase(session, survivor, by="op-test", now=NOON)
    transport = Recorder(survivor)
    dispatch(sessions, NOON, transport)
    assert transport.delivered == []
    assert statuses(sessions, [notice.id])[notice.id] == ("suppressed", "erased")
    with sessions() as session:
        assert service.load(session=session, survivor_id=survivor) is None


def test_a_preference_is_sealed_at_rest(sessions: sessionmaker[Session], survivor: str) -> None:
    prefer(sessions, survivor, CONTACTABLE)
    with sessions() as session:
        row = session.get(models.ContactPreference, survivor)
        assert row is not None
        for clear in ("bluebird", "phone_call", "America/Chicago", "10:00"):
            assert clear not in row.preference
        assert service.load(session=session, survivor_id=survivor) is not None
        assert service.read_preference(session, survivor) == CONTACTABLE


# --- renewal of time-limited consents ------------------------------------------------------


def granted(sessions: sessionmaker[Session], sid: str, end: str | None) -> str:
    data = ConsentIn.model_validate(
        {
            "provisions": [
                {
                    "type": "permit",
                    "recipients": {"partner_types": ["shelter"]},
                    "purposes": ["service_referral"],
                    "categories": ["contact"],
                    "period": {"start": "2026-12-01T00:00:00Z", "end": end},
                }
            ],
            "evidence": {"kind": "signed_statement", "reference": "statement-1"},
        }
    )
    with transaction(sessions) as session:
        sv = session.get(consent_models.Survivor, sid)
        assert sv is not None
        made = consents.grant(
            session=session,
            survivor=sv,
            data=time_limited(data, now=NOON, limits=LIMITS),
            by=RecordedBy(role="self", actor=sid),
            now=NOON,
        )
        schedule_renewal(session, made, now=NOON, limits=LIMITS)
        return made.id


def renewals(sessions: sessionmaker[Session], sid: str) -> list[models.SurvivorNotice]:
    with sessions() as session:
        return list(
            session.scalars(
                select(models.SurvivorNotice).where(
                    models.SurvivorNotice.survivor_id == sid,
                    models.SurvivorNotice.type == NoticeType.CONSENT_RENEWAL.value,
                )
            )
        )


def test_a_renewal_notice_goes_once_renewal_notice_days_before_the_consent_ends(
    sessions: sessionmaker[Session], survivor: str
) -> None:
    prefer(sessions, survivor, ContactPreferenceIn(channels=[Channel.EMAIL]))
    granted(sessions, survivor, None)  # capped at a year from now
    [notice] = renewals(sessions, survivor)
    end = NOON + LIMITS.max_duration
    assert notice.due_at == end - LIMITS.renewal_notice
    assert notice.about["ends_at"] == end.isoformat()
    transport = Recorder(survivor)
    dispatch(sessions, notice.due_at - timedelta(seconds=1), transport)
    assert transport.delivered == []
    for _ in range(2):  # and again after a restart, later: still once
        dispatch(sessions, notice.due_at + timedelta(days=2), transport)
    assert transport.delivered == [(notice.id, Channel.EMAIL)]


def test_a_revoked_consent_gets_no_renewal_notice(
    sessions: sessionmaker[Session], survivor: str
) -> None:
    consent_id = granted(sessions, survivor, "2026-12-20T00:00:00Z")
    [notice] = renewals(sessions, survivor)
    assert notice.due_at == NOON  # less than 30 days of notice left: due at once
    with transaction(sessions) as session:
        sv = session.get(consent_models.Survivor, survivor)
        assert sv is not None
        consents.revoke(session=session, survivor=sv, consent_id=consent_id,
                        by=RecordedBy(role="self", actor=survivor), now=NOON)  # fmt: skip
    transport = Recorder(survivor)
    dispatch(sessions, NOON, transport)
    assert transport.delivered == []
    assert statuses(sessions, [notice.id])[notice.id] == ("withdrawn", "no_longer_applies")


def test_a_renewal_notice_to_a_survivor_with_do_not_contact_is_suppressed(
    sessions: sessionmaker[Session], survivor: str
) -> None:
    prefer(sessions, survivor, DO_NOT_CONTACT)
    granted(sessions, survivor, "2026-12-20T00:00:00Z")
    [notice] = renewals(sessions, survivor)
    transport = Recorder(survivor)
    dispatch(sessions, NOON, transport)
    assert transport.delivered == []
    assert statuses(sessions, [notice.id])[notice.id] == ("suppressed", "do_not_contact")


# --- through the API -------------------------------------------------------------------------


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keys(sessions: sessionmaker[Session]) -> dict[str, str]:
    from services.auth.principals import Role
    from services.auth.service import issue_credential

    with transaction(sessions) as session:
        return {
            "harbor": issue_credential(
                session=session, role=Role.ADVOCATE, subject="adv-sc", agency_id="harbor-outreach"
            ),
            "valley": issue_credential(
                session=session, role=Role.ADVOCATE, subject="adv-sc-v", agency_id="valley-school"
            ),
            "supervisor": issue_credential(
                session=session,
                role=Role.SUPERVISOR,
                subject="sup-sc",
                agency_id="harbor-outreach",
            ),
        }


async def enrolled(http: Any, keys: dict[str, str], advocate: str = "harbor") -> tuple[str, str]:
    sid = f"sv-sc-{uuid.uuid4().hex[:8]}"
    r = await http.post("/v1/survivors", json={"survivor_id": sid}, headers=bearer(keys[advocate]))
    assert r.status_code == 201, r.text
    r = await http.post(
        f"/v1/survivors/{sid}/enrollment-codes", json={}, headers=bearer(keys[advocate])
    )
    code = r.json()["code"]
    return sid, (await http.post("/v1/enroll", json={"code": code})).json()["api_key"]


async def test_the_survivor_records_a_preference_their_advocate_reads_and_no_other_agency(
    api: str, keys: dict[str, str]
) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        sid, own = await enrolled(http, keys)
        body = CONTACTABLE.model_dump(mode="json")
        r = await http.put(
            f"/v1/survivors/{sid}/contact-preference", json=body, headers=bearer(own)
        )
        assert r.status_code == 200, r.text
        assert r.json()["updated_by"] == sid and r.json()["code_word"] == "bluebird-canary-7"
        r = await http.get(
            f"/v1/survivors/{sid}/contact-preference", headers=bearer(keys["harbor"])
        )
        assert r.status_code == 200 and r.json()["channels"] == ["phone_call", "email"]
        r = await http.get(
            f"/v1/survivors/{sid}/contact-preference", headers=bearer(keys["valley"])
        )
        assert r.status_code == 403
        bad = {**body, "time_zone": "Nowhere/Canary-12345"}
        r = await http.put(f"/v1/survivors/{sid}/contact-preference", json=bad, headers=bearer(own))
        assert r.status_code == 422 and "Canary-12345" not in r.text


async def test_an_open_ended_grant_is_capped_and_its_renewal_notice_scheduled(
    api: str, keys: dict[str, str]
) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        sid, own = await enrolled(http, keys)
        grant = {
            "provisions": [
                {
                    "type": "permit",
                    "recipients": {"partner_types": ["shelter"]},
                    "purposes": ["service_referral"],
                    "categories": ["contact"],
                    "period": {"start": "2026-01-01T00:00:00Z", "end": None},
                },
                {
                    "type": "deny",
                    "recipients": {"partner_types": ["*"]},
                    "purposes": ["*"],
                    "categories": ["location"],
                    "period": {"start": "2026-01-01T00:00:00Z", "end": None},
                },
            ],
            "evidence": {"kind": "form_reference", "reference": "form 3"},
        }
        r = await http.post(f"/v1/survivors/{sid}/consents", json=grant, headers=bearer(own))
        assert r.status_code == 201, r.text
        made = r.json()
        recorded = datetime.fromisoformat(made["recorded_at"])
        permit, deny = made["provisions"]
        end = datetime.fromisoformat(permit["period"]["end"])
        assert end == recorded + timedelta(days=365)  # state-a: the default maximum
        assert deny["period"]["end"] is None  # a refusal does not expire
        r = await http.get(f"/v1/survivors/{sid}/notices", headers=bearer(keys["harbor"]))
        [notice] = r.json()
        assert notice["type"] == "consent.renewal_due" and notice["status"] == "pending"
        assert datetime.fromisoformat(notice["due_at"]) == end - timedelta(days=30)


async def test_telling_a_survivor_of_a_declaration_goes_through_the_gate(
    api: str, keys: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        sid, own = await enrolled(http, keys)
        r = await http.put(
            f"/v1/survivors/{sid}/contact-preference",
            json={"do_not_contact": True},
            headers=bearer(own),
        )
        assert r.status_code == 200, r.text
        r = await http.post(
            f"/v1/survivors/{sid}/declarations",
            json={
                "justification": "A credible threat to the survivor tonight.",
                "tell_survivor": True,
            },
            headers=bearer(keys["supervisor"]),
        )
        assert r.status_code == 201, r.text
        transport = Recorder(sid)
        dispatch(sessions, datetime.now(UTC), transport)
        r = await http.get(f"/v1/survivors/{sid}/notices", headers=bearer(own))
        [notice] = r.json()
        assert notice["type"] == "legal.imminent_danger_declared"
        assert (notice["status"], notice["reason"]) == ("suppressed", "do_not_contact")
        assert notice["id"] not in {i for i, _ in transport.delivered}
        r = await http.get("/v1/notices", headers=bearer(keys["harbor"]))
        assert notice["id"] not in {n["id"] for n in r.json()}


def test_the_accord_notices_command_suppresses_do_not_contact_and_sends_the_rest(
    settings: Settings, sessions: sessionmaker[Session], survivor: str
) -> None:
    """The real worker command, as an operator runs it (``accord notices --once``), against the
    same database: the gate's decision is the command's, not only the library's."""
    reachable = f"sv-contact-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        consents.register_survivor(
            session=session, survivor_id=reachable, agency_id="harbor-outreach", now=now
        )
    prefer(sessions, survivor, DO_NOT_CONTACT)
    prefer(sessions, reachable, ContactPreferenceIn(channels=[Channel.EMAIL]))
    ids = {}
    with transaction(sessions) as session:
        for sid in (survivor, reachable):
            ids[sid] = enqueue(session, survivor_id=sid, type=NoticeType.IMMINENT_DANGER_DECLARED,
                               dedupe_key=f"cli:{sid}", about={}, now=now).id  # fmt: skip
    accord = Path(sys.executable).parent / "accord"
    done = subprocess.run(
        [str(accord), "notices", "--once"],
        env=api_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counts = r"sent \d+, held \d+, suppressed \d+, withdrawn \d+, failed \d+\n"
    assert re.fullmatch(counts, done.stdout)
    got = statuses(sessions, list(ids.values()))
    assert got[ids[survivor]] == ("suppressed", "do_not_contact")
    assert got[ids[reachable]][0] == "sent"
    # Ids and outcomes only: no preference, channel or code word reaches the worker's output.
    assert "email" not in done.stdout + done.stderr
    assert DO_NOT_CONTACT.model_dump_json() not in done.stderr


async def test_the_notices_worker_decides_what_falls_due_reports_ready_and_stops_on_sigterm(
    settings: Settings, sessions: sessionmaker[Session], survivor: str
) -> None:
    """``accord notices`` as it runs in a deployment: rounds on an interval, its health port
    ready once a round completed, its outcomes counted on /metrics, a clean exit on SIGTERM."""
    import asyncio

    import httpx

    port = free_port()
    env = api_env(settings, ACCORD_NOTICES_HEALTH_PORT=str(port), ACCORD_NOTICES_INTERVAL_S="0.5")
    accord = Path(sys.executable).parent / "accord"
    proc = await asyncio.create_subprocess_exec(
        str(accord), "notices", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(120):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.25)
            else:
                raise AssertionError("accord notices never became ready")
            prefer(sessions, survivor, DO_NOT_CONTACT)
            with transaction(sessions) as session:
                notice = enqueue(session, survivor_id=survivor,
                                 type=NoticeType.IMMINENT_DANGER_DECLARED,
                                 dedupe_key=f"worker:{survivor}", about={},
                                 now=datetime.now(UTC))  # fmt: skip
            for _ in range(60):  # a round every half second: decided within a few
                if statuses(sessions, [notice.id])[notice.id][0] != "pending":
                    break
                await asyncio.sleep(0.25)
            assert statuses(sessions, [notice.id])[notice.id] == ("suppressed", "do_not_contact")
            metrics = (await http.get("/metrics")).text
            suppressed = re.search(
                r'^accord_survivor_notices_decided_total\{outcome="suppressed"\} (\S+)$',
                metrics,
                re.MULTILINE,
            )
            assert suppressed is not None and float(suppressed.group(1)) >= 1
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
