"""The referral service on SQLite: made, delivered by the relay's decision, moved by the
partner, refused by the policy; visibility (a partner never sees a referral it was not
delivered); every change in the history and in the audit chain, which verifies."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.atrest.envelope import KekRing, LocalKek
from services.audit import store
from services.audit.models import AuditEntry
from services.auth.principals import Principal, Role
from services.broker.pipeline.model import Decision, Withheld
from services.consent.models import Survivor
from services.contact.models import SurvivorNotice
from services.db import Base, make_engine, make_sessionmaker, transaction
from services.referrals import events, service
from services.referrals.models import Referral
from services.referrals.service import Party, ReferralError
from services.referrals.states import Action, Actor
from services.registry.models import Agency, Partner

APPENDER = SigningKey(b"\x09" * 32)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALLOW = Decision(True, ("service_needs",), (), ("consent",), ("R2", "R6"), (), (), False, "rev")
DENY = Decision(False, (), (Withheld("service_needs", ("R11",)),), (), ("R11",), (), (), False, "r")


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'referrals.db'}")
    Base.metadata.create_all(engine)
    ring = KekRing({"t": LocalKek("t", os.urandom(32))}, "t")
    factory = store.with_appender(make_sessionmaker(engine, kek_ring=ring), APPENDER)
    with transaction(factory) as session:
        session.add(Agency(id="harbor", name="Harbor", jurisdiction="state-a"))
        session.flush()  # the survivor's foreign key names the agency
        session.add(Survivor(id="sv-1", agency_id="harbor", created_at=T0))
        for pid in ("shelter-a", "shelter-b"):
            session.add(
                Partner(
                    id=pid,
                    name=pid,
                    type="shelter",
                    jurisdiction="state-a",
                    vetted=True,
                    public_key="k",
                )
            )
    yield factory
    engine.dispose()


def _made(session: Session, decision: Decision = ALLOW, partner: str = "shelter-a") -> Referral:
    row = session.get(Partner, partner)
    assert row is not None
    return service.make(
        session=session,
        agency_id="harbor",
        by="harbor",
        survivor_id="sv-1",
        partner=row,
        addressed_as="partner",
        purpose="service_referral",
        event_id=f"evt-{partner}-{decision.allow}",
        supersedes=None,
        decision=decision,
        now=T0,
    )


def _decision(r: Referral, outcome: str = "allow") -> dict[str, object]:
    return {
        "event_id": r.event_id,
        "event_type": "accord.referral.made",
        "agency_id": r.agency_id,
        "partner_id": r.partner_id,
        "delivery_id": "d-1" if outcome != "deny" else None,
        "outcome": outcome,
        "released": ["service_needs"] if outcome != "deny" else [],
        "withheld": [{"field": "phone", "rules": ["R2"]}],
        "reasons": ["R2", "R6"],
        "decided_at": "2026-12-01T09:00:05Z",
    }


PARTNER = Party(Actor.PARTNER, "shelter-a", "shelter-a")
AGENCY = Party(Actor.REFERRER, "harbor", "harbor")


def test_a_referral_goes_from_made_to_completed_and_each_change_is_chained(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        r = _made(session)
        rid = r.id
        service.on_decision(session, _decision(r))
        service.on_decision(session, _decision(r))  # redelivered: no second change
    with transaction(sessions) as session:
        for action, code in [
            (Action.ACKNOWLEDGE, None),
            (Action.ACCEPT, None),
            (Action.COMPLETE, "service_provided"),
        ]:
            service.move(
                session=session,
                referral_id=rid,
                action=action,
                party=PARTNER,
                code=code,
                now=T0 + timedelta(hours=1),
            )
    with sessions() as session:
        r2 = session.get(Referral, rid)
        assert r2 is not None
        assert [c.target for c in r2.history] == [
            "made",
            "delivered",
            "acknowledged",
            "accepted",
            "completed",
        ]
        assert r2.released == ["service_needs"] and r2.outcome_code == "service_provided"
        told = list(session.scalars(select(SurvivorNotice.about)))
        assert told == [{"referral_id": rid, "partner_id": "shelter-a"}]  # the acceptance
        keys = list(
            session.scalars(select(AuditEntry.entry_key).where(AuditEntry.kind == "referral"))
        )
        assert keys == [f"referral:{rid}:{n}" for n in range(5)]
        for c in r2.history:
            assert events.problems(events.cloudevent(r2, c)) == []
    report = store.verify_database(sessions, [], None, APPENDER.verify_key)
    assert report.ok


def test_the_policy_refusing_records_the_rules_and_the_partner_never_sees_it(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        r = _made(session, DENY)
        rid = r.id
        assert r.state == "refused" and r.refused_rules == ["R11"]
    partner = Principal(Role.PARTNER, "shelter-a", "c1")
    with sessions() as session:
        with pytest.raises(ReferralError) as seen:
            service.get(session=session, referral_id=rid, principal=partner)
        assert seen.value.status == 404
        assert service.listing(session=session, principal=partner) == []
        agency = Principal(Role.AGENCY, "harbor", "c2")
        assert service.get(session=session, referral_id=rid, principal=agency).id == rid
    with transaction(sessions) as session, pytest.raises(ReferralError) as moved:
        service.move(
            session=session, referral_id=rid, action=Action.ACKNOWLEDGE, party=PARTNER, now=T0
        )
    assert moved.value.status == 404  # not "409 refused": that would say it exists


def test_the_relay_denying_refuses_a_made_referral(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        r = _made(session)
        service.on_decision(session, _decision(r, "deny"))
        assert r.state == "refused" and r.refused_rules == ["R2", "R6"]


def test_invalid_moves_are_refused_with_the_transition_named(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        r = _made(session)
        rid = r.id
        service.on_decision(session, _decision(r))
    with transaction(sessions) as session, pytest.raises(ReferralError) as err:
        service.move(session=session, referral_id=rid, action=Action.ACCEPT, party=PARTNER, now=T0)
    assert err.value.status == 409 and "delivered" in err.value.message
    with transaction(sessions) as session, pytest.raises(ReferralError) as err:
        service.move(
            session=session, referral_id=rid, action=Action.WITHDRAW, party=PARTNER, now=T0
        )
    assert err.value.status == 403
    other = Party(Actor.PARTNER, "shelter-b", "shelter-b")
    with transaction(sessions) as session, pytest.raises(ReferralError) as err:
        service.move(
            session=session, referral_id=rid, action=Action.ACKNOWLEDGE, party=other, now=T0
        )
    assert err.value.status == 404


def test_a_decline_keeps_its_note_sealed_and_a_re_referral_skips_the_decliner(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        r = _made(session)
        rid = r.id
        service.on_decision(session, _decision(r))
        service.move(
            session=session, referral_id=rid, action=Action.ACKNOWLEDGE, party=PARTNER, now=T0
        )
        service.move(
            session=session,
            referral_id=rid,
            action=Action.DECLINE,
            party=PARTNER,
            code="no_capacity",
            note="full until Friday",
            now=T0,
        )
        assert r.note is not None and "Friday" not in r.note
        assert service.open_note(session=session, r=r) == "full until Friday"
        how, found = service.candidates(
            session=session,
            agency_id="harbor",
            survivor_id="sv-1",
            partner_id=None,
            partner_type="shelter",
            jurisdiction="state-a",
            supersedes=rid,
        )
        assert how == "type" and [p.id for p in found] == ["shelter-b"]
        with pytest.raises(ReferralError) as err:
            service.candidates(
                session=session,
                agency_id="harbor",
                survivor_id="sv-2",
                partner_id="shelter-b",
                partner_type=None,
                jurisdiction=None,
                supersedes=rid,
            )
        assert err.value.status == 422
