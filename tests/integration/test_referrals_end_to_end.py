"""A referral's whole life on the real stack (Kafka, OPA, PostgreSQL, the relay, the sink, the
API): made to a forbidden partner (refused, with the rules; nothing sent), made to a permitted
one and delivered to it alone through the relay, acknowledged, declined with a reason,
re-referred to the partner type (resolved to another shelter), acknowledged with the SDK,
accepted through a FHIR Task (the survivor told through the safe-contact gate), completed on
the partner's own Kafka reply topic (it cannot write another partner's).
Only the shelter the survivor consented to share contact data with gets their contact
preference. The survivor's view and the audit chain show each step; the referrals topic
carries each change as a CloudEvent that matches its schema; the forbidden partner's topic,
and a subscriber of the event type that was not addressed, get nothing about any of it."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.audit.models import AuditEntry
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.broker.pipeline import seal
from services.contact.gate import NoticeType, dispatch_due
from services.contact.models import SurvivorNotice
from services.contact.service import read_preference
from services.db import transaction
from services.decision_records import split_decisions
from services.kafka import client as kafka_client
from services.kafka.client import ADMIN, AUDIT, kafka
from services.referrals import events
from services.sdk import Referrals
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.events import cloudevent
from tests.support.keys import PARTNER_KEYS, opener
from tests.support.registry import MOU, TRAINED
from tests.support.stack import kafka_ready

pytestmark = pytest.mark.integration

HAVEN = "haven-shelter"  # a second shelter of state-a, subscribed to nothing
WATCHED = ["lighthouse-shelter", HAVEN, "metro-police", "northside-clinic"]
PAYLOAD = {
    "survivor_name": "Oriel Vantablack",
    "phone": "+1-555-0199",
    "age": 27,
    "service_needs": ["shelter", "legal"],
    "referral_reason": "needs a safe bed tonight",
    "hiv_status": "negative",
}
VALUES = ("Oriel", "Vantablack", "555-0199", "safe bed", "kestrel")
PREFERENCE = {
    "do_not_contact": False,
    "channels": ["sms", "in_person"],
    "safe_times": [],
    "time_zone": "UTC",
    "code_word": "kestrel",
}
RULE = re.compile(r"^R[0-9]{1,2}$")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keys(sessions: sessionmaker[Session]) -> dict[str, str]:
    with transaction(sessions) as session:

        def key(role: Role, subject: str, agency: str | None = None) -> str:
            return issue_credential(session=session, role=role, subject=subject, agency_id=agency)

        return {
            "agency": key(Role.AGENCY, "harbor-outreach"),
            "advocate": key(Role.ADVOCATE, "adv-ref", "harbor-outreach"),
            "admin": key(Role.ADMIN, "admin-ref"),
            "compliance": key(Role.COMPLIANCE, "cmp-ref"),
            **{p: key(Role.PARTNER, p) for p in WATCHED},
        }


@pytest.fixture(scope="module")
async def http(
    api: str, settings: Settings, keys: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        r = await client.put(
            f"/v1/admin/partners/{HAVEN}",
            json={
                "name": "Haven Shelter",
                "type": "shelter",
                "jurisdiction": "state-a",
                "vetted": True,
                "training_attested_until": TRAINED,
                "public_key": seal.public_key_of(PARTNER_KEYS[HAVEN]),
                "agreements": [
                    {
                        "id": "mou-haven",
                        "purposes": ["service_referral"],
                        "categories": ["identity", "contact", "service_need", "case_status"],
                        **MOU,
                    }
                ],
                "subscriptions": {},
            },
            headers=_bearer(keys["admin"]),
        )
        assert r.status_code in (200, 201), r.text
        await kafka_ready(settings, partners=[HAVEN])  # its principal reads its own topic
        yield client


async def _until(http: httpx.AsyncClient, rid: str, key: str, state: str) -> dict[str, Any]:
    for _ in range(120):
        r = await http.get(f"/v1/referrals/{rid}", headers=_bearer(key))
        assert r.status_code == 200, r.text
        if r.json()["state"] == state:
            return dict(r.json())
        await asyncio.sleep(0.5)
    raise AssertionError(f"referral never became {state}: {r.json()['state']}")


async def _refer(
    http: httpx.AsyncClient, key: str, survivor: str, to: dict[str, str], **extra: Any
) -> dict[str, Any]:
    body = {
        "to": to,
        "purpose": "service_referral",
        "event": cloudevent("harbor-outreach", survivor, PAYLOAD),
        **extra,
    }
    r = await http.post("/v1/referrals", json=body, headers=_bearer(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _days_from_now(days: int) -> str:
    """A consent's bound relative to today: the test must not expire on a calendar date (and an
    end within the jurisdiction's maximum duration is kept as given)."""
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_referral_closes_the_loop_and_no_one_else_learns_of_it(
    http: httpx.AsyncClient,
    settings: Settings,
    keys: dict[str, str],
    sessions: sessionmaker[Session],
) -> None:
    survivor = f"sv-ref-{uuid.uuid4().hex[:8]}"
    agency, advocate = _bearer(keys["agency"]), _bearer(keys["advocate"])
    r = await http.post("/v1/survivors", json={"survivor_id": survivor}, headers=advocate)
    assert r.status_code == 201, r.text
    # The two shelters (by name: other tests register shelters of state-a too, and a referral
    # to the type goes to the first that may receive it) may get identity and service needs;
    # only the second contact data.
    consent = {
        "provisions": [
            {
                "type": "permit",
                "recipients": {"partners": ["lighthouse-shelter", HAVEN], "partner_types": []},
                "purposes": ["service_referral"],
                "categories": ["identity", "service_need"],
                "period": {"start": _days_from_now(-30), "end": _days_from_now(60)},
            },
            {
                "type": "permit",
                "recipients": {"partners": [HAVEN], "partner_types": []},
                "purposes": ["service_referral"],
                "categories": ["contact"],
                "period": {"start": _days_from_now(-30), "end": _days_from_now(60)},
            },
        ],
        "evidence": {"kind": "form_reference", "reference": "signed form, kept at the agency"},
    }
    r = await http.post(f"/v1/survivors/{survivor}/consents", json=consent, headers=advocate)
    assert r.status_code == 201, r.text
    r = await http.put(
        f"/v1/survivors/{survivor}/contact-preference", json=PREFERENCE, headers=advocate
    )
    assert r.status_code in (200, 201, 204), r.text

    async with AsyncExitStack() as stack:
        topics = {
            p: await stack.enter_async_context(
                tail(kafka(settings, kafka_client.partner(p)), settings.partner_topic(p))
            )
            for p in WATCHED
        }
        decisions = await stack.enter_async_context(
            tail(kafka(settings, AUDIT), settings.topic_decisions)
        )

        # 1. To a partner the policy forbids (law enforcement, an adult, R4; no agreement for
        # this purpose, R11): refused with the rule ids, nothing published.
        forbidden = await _refer(http, keys["agency"], survivor, {"partner_id": "metro-police"})
        assert forbidden["state"] == "refused"
        assert forbidden["refused_rules"] and all(RULE.match(x) for x in forbidden["refused_rules"])
        assert [c["target"] for c in forbidden["history"]] == ["made", "refused"]

        # 2. To the named shelter: through the relay, to it alone.
        first = await _refer(http, keys["agency"], survivor, {"partner_id": "lighthouse-shelter"})
        assert first["state"] == "made" and first["addressed_as"] == "partner"
        first = await _until(http, first["id"], keys["agency"], "delivered")
        assert "service_needs" in first["released"] and "hiv_status" not in first["released"]
        assert "phone" not in first["released"]
        shelter = _bearer(keys["lighthouse-shelter"])
        # No consent to share contact data with this shelter: no preference either.
        seen = (await http.get(f"/v1/referrals/{first['id']}", headers=shelter)).json()
        assert seen["contact_preference"] is None and seen["refused_rules"] == []
        r = await http.post(f"/v1/referrals/{first['id']}/acknowledge", headers=shelter)
        assert r.status_code == 200 and r.json()["state"] == "acknowledged", r.text
        # An invalid move is refused, the transition named, nothing changed.
        r = await http.post(
            f"/v1/referrals/{first['id']}/complete",
            json={"code": "service_provided"},
            headers=shelter,
        )
        assert r.status_code == 409 and "acknowledged" in r.json()["detail"], r.text
        # Another partner cannot see it, let alone move it.
        r = await http.post(
            f"/v1/referrals/{first['id']}/accept", headers=_bearer(keys["northside-clinic"])
        )
        assert r.status_code == 404
        r = await http.post(
            f"/v1/referrals/{first['id']}/decline",
            json={"code": "no_capacity", "note": "No bed until Friday."},
            headers=shelter,
        )
        assert r.status_code == 200 and r.json()["state"] == "declined", r.text
        assert r.json()["note"] is None  # the partner's own answer does not echo its note
        seen = (await http.get(f"/v1/referrals/{first['id']}", headers=agency)).json()
        assert seen["reason_code"] == "no_capacity" and seen["note"] == "No bed until Friday."

        # 3. Re-referred to the partner type: resolved to the other shelter.
        second = await _refer(
            http,
            keys["agency"],
            survivor,
            {"partner_type": "shelter", "jurisdiction": "state-a"},
            supersedes=first["id"],
        )
        assert second["partner_id"] == HAVEN and second["addressed_as"] == "type"
        second = await _until(http, second["id"], keys["agency"], "delivered")
        assert "phone" in second["released"]  # consented for this shelter by name
        async with Referrals(str(http.base_url), api_key=keys[HAVEN]) as sdk:
            moved = await sdk.acknowledge(second["id"])
            assert moved["state"] == "acknowledged" and moved["supersedes"] is None
            assert moved["contact_preference"]["code_word"] == PREFERENCE["code_word"]
            assert moved["contact_preference"]["channels"] == PREFERENCE["channels"]
        exported = await http.get(
            f"/v1/referrals/{second['id']}/fhir", headers=_bearer(keys[HAVEN])
        )
        assert exported.status_code == 200
        Bundle.model_validate(exported.json())
        task = exported.json()["entry"][0]["resource"]
        assert (
            task["status"] == "received" and task["owner"]["reference"] == f"Organization/{HAVEN}"
        )
        r = await http.put(
            f"/v1/referrals/{second['id']}/fhir",
            json={**task, "status": "accepted"},
            headers=_bearer(keys[HAVEN]),
        )
        assert r.status_code == 200 and r.json()["state"] == "accepted", r.text
        sent: list[tuple[str, str | None]] = []

        class Recorder:
            def deliver(self, session: Session, notice: SurvivorNotice, channel: Any) -> None:
                if notice.survivor_id == survivor and notice.type.startswith("referral."):
                    sent.append((notice.type, channel.value if channel else None))

        dispatch_due(
            sessions,
            now=datetime.now(UTC),
            transport=Recorder(),
            limit=1000,
            preference=read_preference,
        )
        dispatch_due(
            sessions,
            now=datetime.now(UTC),
            transport=Recorder(),
            limit=1000,
            preference=read_preference,
        )
        assert sent == [
            (NoticeType.REFERRAL_ACCEPTED.value, "sms")
        ]  # told once, on the safe channel
        # A Kafka partner completes it on its own reply topic, the one topic it may write;
        # it cannot write another partner's replies.
        reply = {"referral_id": second["id"], "action": "complete", "code": "service_provided"}
        writer = AIOKafkaProducer(**kafka(settings, kafka_client.partner(HAVEN)).kwargs())
        await writer.start()
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await writer.send_and_wait(
                    settings.reply_topic("lighthouse-shelter"), json.dumps(reply).encode()
                )
            await writer.send_and_wait(
                settings.reply_topic(HAVEN), json.dumps(reply).encode(), key=second["id"].encode()
            )
        finally:
            await writer.stop()
        done = await _until(http, second["id"], keys["agency"], "completed")
        assert done["outcome_code"] == "service_provided"

        got = {
            p: await collect(c, until=0, timeout_s=3, settle_s=1, opener=opener(p))
            for p, c in topics.items()
        }
        # One record per event; each partner's decision in it.
        records = await collect(decisions, until=0, timeout_s=2, settle_s=1, split=split_decisions)

    ids = {forbidden["id"], first["id"], second["id"]}
    event_ids = {forbidden["event_id"], first["event_id"], second["event_id"]}

    def about(doc: dict[str, Any]) -> bool:
        text = str(doc)
        return survivor in text or any(i in text for i in ids | event_ids)

    # Only the addressed partners received anything; the forbidden partner and a subscriber
    # of accord.referral.made that was not addressed got nothing, and were not even judged.
    assert not [d for d in got["metro-police"] if about(d)]
    assert not [d for d in got["northside-clinic"] if about(d)]
    judged = {(d["event_id"], d["partner_id"]) for d in records if d["event_id"] in event_ids}
    assert judged == {(first["event_id"], "lighthouse-shelter"), (second["event_id"], HAVEN)}
    lighthouse = [d for d in got["lighthouse-shelter"] if about(d)]
    assert [d["type"] for d in lighthouse] == [
        "accord.referral.made",
        "accord.referral_state.delivered",
    ]
    assert "hiv_status" not in lighthouse[0]["data"] and lighthouse[0]["id"] == first["event_id"]
    assert lighthouse[1]["data"]["referral_id"] == first["id"]
    assert "supersedes" not in [d for d in got[HAVEN] if about(d)][1]["data"]

    # The survivor's side: each referral, to whom, what was sent, its state.
    view = (await http.get(f"/v1/survivors/{survivor}/disclosures", headers=advocate)).json()
    mine = {d["referral_id"]: d for d in view if d["kind"] == "referral"}
    assert {k: (v["partner_id"], v["referral_state"]) for k, v in mine.items()} == {
        forbidden["id"]: ("metro-police", "refused"),
        first["id"]: ("lighthouse-shelter", "declined"),
        second["id"]: (HAVEN, "completed"),
    }
    assert mine[forbidden["id"]]["fields"] == []
    assert "service_needs" in mine[second["id"]]["fields"]
    steps = (await http.get(f"/v1/survivors/{survivor}/referrals", headers=advocate)).json()
    by_id = {s["id"]: [c["target"] for c in s["history"]] for s in steps}
    assert by_id[first["id"]] == ["made", "delivered", "acknowledged", "declined"]
    assert by_id[second["id"]] == ["made", "delivered", "acknowledged", "accepted", "completed"]

    # The survivor is told of the acceptance through the safe-contact gate, once.
    with sessions() as session:
        told = list(
            session.scalars(
                select(SurvivorNotice).where(
                    SurvivorNotice.survivor_id == survivor,
                    SurvivorNotice.type == NoticeType.REFERRAL_ACCEPTED.value,
                )
            )
        )
    assert [n.about for n in told] == [{"referral_id": second["id"], "partner_id": HAVEN}]
    assert [n.status for n in told] == ["sent"]

    # The audit chain: every step, in order, never a value or the note.
    with sessions() as session:
        rows = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.kind == "referral", AuditEntry.survivor_id == survivor)
                .order_by(AuditEntry.seq)
            )
        )
    chained = [(r.entry_key.split(":")[1], r.record) for r in rows]
    assert [k for k, _ in chained].count(second["id"]) == 5
    assert all(v not in rec for _, rec in chained for v in (*VALUES, "Friday"))
    r = await http.get("/v1/audit/verify", headers=_bearer(keys["compliance"]))
    assert r.status_code == 200 and r.json()["ok"] is True, r.text

    # Each change on the referrals topic as a CloudEvent matching its type's schema.
    async with tail(kafka(settings, ADMIN), settings.topic_referrals, from_beginning=True) as c:
        changes = [d for d in await collect(c, until=0, timeout_s=3, settle_s=1) if about(d)]
    assert all(events.problems(d) == [] for d in changes)
    assert [d["type"] for d in changes if d["data"]["referral_id"] == second["id"]] == [
        f"{events.TYPE_PREFIX}{s}"
        for s in ("made", "delivered", "acknowledged", "accepted", "completed")
    ]
    assert all(v not in str(d) for d in changes for v in (*VALUES, "Friday"))
