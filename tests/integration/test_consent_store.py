"""The consent store on both backends: SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker

from services import migrations
from services.auth.principals import Role
from services.consent import models, service
from services.consent.schemas import ConsentIn, RecordedBy
from services.consent.service import ConsentError
from services.db import make_engine, make_sessionmaker, transaction
from services.devstack import postgres
from services.registry.models import Agency
from services.settings import Settings
from services.snapshot.build import snapshot

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SELF = RecordedBy(role="self", actor="sv-1")


def grant_body(*categories: str, end: str | None = None) -> ConsentIn:
    return ConsentIn.model_validate(
        {
            "provisions": [
                {
                    "type": "permit",
                    "recipients": {"partner_types": ["shelter"]},
                    "purposes": ["service_referral"],
                    "categories": list(categories or ("*",)),
                    "period": {"start": "2026-01-01T00:00:00Z", "end": end},
                }
            ],
            "evidence": {"kind": "signed_statement", "reference": "statement-1"},
        }
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings
) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        name = f"store_{uuid.uuid4().hex[:8]}"
        admin = postgres.url(settings, "postgres").replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = postgres.url(settings, name)
    migrations.upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        session.add(Agency(id="harbor-outreach", name="Harbor", jurisdiction="state-a"))
        service.register_survivor(
            session=session, survivor_id="sv-1", agency_id="harbor-outreach", now=NOW
        )
    yield factory
    engine.dispose()
    if request.param == "postgresql":
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_every_change_is_a_new_version_and_history_is_kept(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        sv = s.get(models.Survivor, "sv-1")
        assert sv is not None
        c = service.grant(session=s, survivor=sv, data=grant_body(), by=SELF, now=NOW)
        service.amend(
            session=s, survivor=sv, consent_id=c.id, data=grant_body("identity"), by=SELF, now=NOW
        )
        service.revoke(session=s, survivor=sv, consent_id=c.id, by=SELF, now=NOW)
    with sessions() as s:
        current = service.current_consents(session=s, survivor_id="sv-1", now=NOW)
        assert [(x.id, x.version, x.status) for x in current] == [(c.id, 3, "revoked")]
        v1 = service.version(session=s, survivor_id="sv-1", consent_id=c.id, number=1)
        v2 = service.version(session=s, survivor_id="sv-1", consent_id=c.id, number=2)
        assert v1.provisions[0].categories == ["*"] and v1.status == "active"
        assert v2.provisions[0].categories == ["identity"]
        sv = s.get(models.Survivor, "sv-1")
        assert sv is not None and sv.change_seq == 3


def test_a_revoked_consent_cannot_be_amended_or_revoked_again(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as s:
        sv = s.get(models.Survivor, "sv-1")
        assert sv is not None
        c = service.grant(session=s, survivor=sv, data=grant_body(), by=SELF, now=NOW)
        service.revoke(session=s, survivor=sv, consent_id=c.id, by=SELF, now=NOW)
        with pytest.raises(ConsentError) as amend:
            service.amend(
                session=s, survivor=sv, consent_id=c.id, data=grant_body(), by=SELF, now=NOW
            )
        with pytest.raises(ConsentError) as again:
            service.revoke(session=s, survivor=sv, consent_id=c.id, by=SELF, now=NOW)
    assert amend.value.status == 409 and again.value.status == 409


def test_expiry_is_judged_at_read_time_without_a_job(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        sv = s.get(models.Survivor, "sv-1")
        assert sv is not None
        service.grant(
            session=s, survivor=sv, data=grant_body(end="2026-12-01T00:00:00Z"), by=SELF, now=NOW
        )
    with sessions() as s:
        before = service.current_consents(session=s, survivor_id="sv-1", now=NOW)
        later = service.current_consents(
            session=s, survivor_id="sv-1", now=NOW + timedelta(days=30)
        )
    assert [c.status for c in before] == ["active"] and [c.status for c in later] == ["expired"]


def test_R5_flagging_a_guardian_voids_their_consents_in_the_snapshot(
    sessions: sessionmaker[Session],
) -> None:
    guardian = RecordedBy(role="guardian", actor="g-1", relation="father")
    with transaction(sessions) as s:
        sv = s.get(models.Survivor, "sv-1")
        assert sv is not None
        service.record_guardian(
            session=s, survivor=sv, guardian_id="g-1", relation="father", suspect=False
        )
        service.grant(session=s, survivor=sv, data=grant_body(), by=guardian, now=NOW)
        before = snapshot(session=s, survivor=sv)
        service.record_guardian(
            session=s, survivor=sv, guardian_id="g-1", relation="father", suspect=True
        )
        after = snapshot(session=s, survivor=sv)
    assert before.consents[0]["recorded_by"]["suspect"] is False
    assert after.consents[0]["recorded_by"]["suspect"] is True
    assert after.seq > before.seq  # republished to the relay


def test_enrollment_codes_are_single_use_and_expire(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        sv = s.get(models.Survivor, "sv-1")
        assert sv is not None
        fresh = service.issue_enrollment_code(
            session=s,
            survivor=sv,
            role=Role.SURVIVOR,
            subject="sv-1",
            issued_by="adv",
            now=NOW,
            ttl=timedelta(minutes=15),
        )
        stale = service.issue_enrollment_code(
            session=s,
            survivor=sv,
            role=Role.SURVIVOR,
            subject="sv-1",
            issued_by="adv",
            now=NOW,
            ttl=timedelta(minutes=15),
        )
    with transaction(sessions) as s:
        key, role = service.redeem_enrollment_code(session=s, code=fresh, now=NOW)
        assert key.startswith("acc_") and role == "survivor"
    for code, at in ((fresh, NOW), (stale, NOW + timedelta(minutes=16)), ("zz-nothing", NOW)):
        with transaction(sessions) as s, pytest.raises(ConsentError) as refused:
            service.redeem_enrollment_code(session=s, code=code, now=at)
        assert refused.value.status == 401
