"""The consent service on the real stack: enrollment, access rules, grant → narrow → revoke
taking effect in the relay, notices, disclosures, preview, and bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select, update

from services.atrest.store import SurvivorErased
from services.audit.models import AuditEntry
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.broker.survivor_keys import EventSealer
from services.consent import models
from services.consent.erasure import erase_command
from services.db import make_engine, make_sessionmaker, transaction
from services.kafka import client as kafka_client
from services.kafka.client import kafka
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.events import cloudevent, inbound_record
from tests.support.keys import opener

pytestmark = pytest.mark.integration

SHELTER = "lighthouse-shelter"
EVIDENCE = {"kind": "form_reference", "reference": "signed form #17, kept at the agency"}
FIELDS = {"survivor_name": "E", "age": 31, "phone": "+1-555-0199", "service_needs": ["legal"]}


def provision(
    kind: str = "permit",
    types: list[str] | None = None,
    purposes: list[str] | None = None,
    categories: list[str] | None = None,
    start: str = "2026-01-01T00:00:00Z",
    end: str | None = None,
) -> dict[str, Any]:
    return {
        "type": kind,
        "recipients": {"partners": [], "partner_types": types or ["shelter"]},
        "purposes": purposes or ["service_referral"],
        "categories": categories or ["*"],
        "period": {"start": start, "end": end},
    }


def consent(*provisions: dict[str, Any]) -> dict[str, Any]:
    return {"provisions": list(provisions or (provision(),)), "evidence": EVIDENCE}


class Api:
    def __init__(self, base: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=base, headers=headers, timeout=30)

    async def __call__(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.http.request(method, path, json=body)


@pytest.fixture(scope="module")
def staff(database: str) -> dict[str, str]:
    sessions = make_sessionmaker(make_engine(database))
    with transaction(sessions) as session:
        return {
            "harbor": issue_credential(
                session=session,
                role=Role.ADVOCATE,
                subject="adv-harbor",
                agency_id="harbor-outreach",
            ),
            "valley": issue_credential(
                session=session,
                role=Role.ADVOCATE,
                subject="adv-valley",
                agency_id="valley-school",
            ),
            "agency": issue_credential(
                session=session, role=Role.AGENCY, subject="harbor-outreach"
            ),
        }


async def enrolled(
    api: str, advocate_key: str, guardian: dict[str, Any] | None = None
) -> tuple[str, Api]:
    """A new survivor registered by the advocate, and a client holding the survivor's own key."""
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    advocate = Api(api, advocate_key)
    assert (await advocate("POST", "/v1/survivors", {"survivor_id": survivor})).status_code == 201
    code = (await advocate("POST", f"/v1/survivors/{survivor}/enrollment-codes", {})).json()["code"]
    key = (await Api(api, None)("POST", "/v1/enroll", {"code": code})).json()["api_key"]
    return survivor, Api(api, key)


# --- enrollment and access --------------------------------------------------------------------


async def test_enrollment_code_is_single_use(api: str, staff: dict[str, str]) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    advocate = Api(api, staff["harbor"])
    await advocate("POST", "/v1/survivors", {"survivor_id": survivor})
    code = (await advocate("POST", f"/v1/survivors/{survivor}/enrollment-codes", {})).json()["code"]
    first = await Api(api, None)("POST", "/v1/enroll", {"code": code})
    assert first.status_code == 200 and first.json()["role"] == "survivor"
    again = await Api(api, None)("POST", "/v1/enroll", {"code": code})
    assert again.status_code == 401


async def test_expired_enrollment_code_is_refused(
    api: str, staff: dict[str, str], database: str
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    advocate = Api(api, staff["harbor"])
    await advocate("POST", "/v1/survivors", {"survivor_id": survivor})
    code = (await advocate("POST", f"/v1/survivors/{survivor}/enrollment-codes", {})).json()["code"]
    with transaction(make_sessionmaker(make_engine(database))) as session:
        session.execute(
            update(models.EnrollmentCode)
            .where(models.EnrollmentCode.id == code.split("-")[0])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await Api(api, None)("POST", "/v1/enroll", {"code": code})).status_code == 401


async def test_survivor_cannot_read_or_change_another_survivors_consent(
    api: str, staff: dict[str, str]
) -> None:
    alice, alice_api = await enrolled(api, staff["harbor"])
    bob, _ = await enrolled(api, staff["harbor"])
    assert (await alice_api("GET", f"/v1/survivors/{bob}/consents")).status_code == 403
    assert (await alice_api("POST", f"/v1/survivors/{bob}/consents", consent())).status_code == 403
    assert (await alice_api("GET", f"/v1/survivors/{alice}/consents")).status_code == 200


async def test_advocate_cannot_act_for_another_agencys_survivor(
    api: str, staff: dict[str, str]
) -> None:
    survivor, _ = await enrolled(api, staff["harbor"])
    other = Api(api, staff["valley"])
    assert (await other("GET", f"/v1/survivors/{survivor}/consents")).status_code == 403
    assert (await other("POST", f"/v1/survivors/{survivor}/consents", consent())).status_code == 403
    assert (
        await Api(api, staff["harbor"])("GET", f"/v1/survivors/{survivor}/consents")
    ).status_code == 200


async def test_agency_key_cannot_touch_consents(api: str, staff: dict[str, str]) -> None:
    survivor, _ = await enrolled(api, staff["harbor"])
    response = await Api(api, staff["agency"])("GET", f"/v1/survivors/{survivor}/consents")
    assert response.status_code == 403


async def test_R5_guardian_acts_for_the_minor_but_a_suspect_guardian_gets_403(
    api: str, staff: dict[str, str]
) -> None:
    survivor, _ = await enrolled(api, staff["harbor"])
    advocate = Api(api, staff["harbor"])
    guardian = {"guardian_id": f"g-{uuid.uuid4().hex[:8]}", "relation": "aunt"}
    assert (
        await advocate("PUT", f"/v1/survivors/{survivor}/guardians", guardian)
    ).status_code == 204
    code = (
        await advocate(
            "POST",
            f"/v1/survivors/{survivor}/enrollment-codes",
            {"role": "guardian", "guardian_id": guardian["guardian_id"]},
        )
    ).json()["code"]
    key = (await Api(api, None)("POST", "/v1/enroll", {"code": code})).json()["api_key"]
    as_guardian = Api(api, key)
    granted = await as_guardian("POST", f"/v1/survivors/{survivor}/consents", consent())
    assert granted.status_code == 201
    assert granted.json()["recorded_by"] == {
        "role": "guardian",
        "actor": guardian["guardian_id"],
        "relation": "aunt",
        "suspect": False,
    }
    flagged = {**guardian, "suspect": True}
    assert (
        await advocate("PUT", f"/v1/survivors/{survivor}/guardians", flagged)
    ).status_code == 204
    assert (await as_guardian("GET", f"/v1/survivors/{survivor}/consents")).status_code == 403
    assert (
        await as_guardian("POST", f"/v1/survivors/{survivor}/consents", consent())
    ).status_code == 403


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            consent(
                {
                    **provision(),
                    "recipients": {"partners": ["no-such-partner"], "partner_types": []},
                }
            ),
            "No registered partner at provisions[0].recipients.partners[0]",
        ),
        (consent(provision(categories=["favourite_colour"])), "categories"),
        (
            consent(provision(start="2026-06-01T00:00:00Z", end="2026-01-01T00:00:00Z")),
            "end after it starts",
        ),
        ({"provisions": [], "evidence": EVIDENCE}, "provisions"),
        ({"provisions": [provision()]}, "evidence"),
    ],
)
async def test_bad_consent_is_4xx_with_a_reason_and_nothing_is_stored(
    api: str, staff: dict[str, str], body: dict[str, Any], fragment: str
) -> None:
    survivor, me = await enrolled(api, staff["harbor"])
    response = await me("POST", f"/v1/survivors/{survivor}/consents", body)
    assert 400 <= response.status_code < 500
    assert fragment in response.text
    assert (await me("GET", f"/v1/survivors/{survivor}/consents")).json() == []


async def test_malformed_json_and_oversized_body_are_refused(
    api: str, staff: dict[str, str], settings: Settings
) -> None:
    survivor, me = await enrolled(api, staff["harbor"])
    path = f"/v1/survivors/{survivor}/consents"
    bad = await me.http.post(
        path, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 422
    huge = consent(provision()) | {
        "evidence": {"kind": "form_reference", "reference": "x" * settings.max_event_bytes}
    }
    assert (await me("POST", path, huge)).status_code == 413
    assert (await me("GET", path)).json() == []


# --- taking effect in the relay ----------------------------------------------------------------


async def publish(
    settings: Settings, producer: AIOKafkaProducer, survivor: str, **over: Any
) -> str:
    event = cloudevent("harbor-outreach", survivor, {**FIELDS, **over.pop("data", {})}, **over)
    await producer.send_and_wait(
        settings.topic_inbound, inbound_record(settings, event), key=survivor.encode()
    )
    return str(event["id"])


async def received(
    settings: Settings, consumer: Any, expect: int, timeout_s: float = 20
) -> list[dict[str, Any]]:
    return await collect(
        consumer, until=expect, timeout_s=timeout_s, settle_s=1.5, opener=opener(SHELTER)
    )


async def test_R2_grant_then_narrow_then_R3_revoke_take_effect_in_order(
    api: str, staff: dict[str, str], settings: Settings, producer: AIOKafkaProducer
) -> None:
    survivor, me = await enrolled(api, staff["harbor"])
    base = f"/v1/survivors/{survivor}/consents"

    async def step(partner: Any, expect: int) -> dict[str, dict[str, Any]]:
        """Publish one event, wait for what reaches the shelter, keyed by event id."""
        await publish(settings, producer, survivor)
        got = await received(settings, partner, expect=expect, timeout_s=10 if expect else 4)
        return {d["id"]: d for d in got if d["subject"] == survivor}

    async with tail(
        kafka(settings, kafka_client.partner(SHELTER)), settings.partner_topic(SHELTER)
    ) as partner:
        assert await step(partner, 0) == {}  # no consent yet: nothing
        granted = (await me("POST", base, consent())).json()
        shared = list((await step(partner, 1)).values())
        assert len(shared) == 1 and {"survivor_name", "service_needs"} <= set(shared[0]["data"])
        narrowed = await me(
            "PUT", f"{base}/{granted['id']}", consent(provision(categories=["identity"]))
        )
        assert narrowed.status_code == 200 and narrowed.json()["version"] == 2
        narrow = list((await step(partner, 1)).values())
        assert len(narrow) == 1 and sorted(narrow[0]["data"]) == ["survivor_name"]
        revoked = await me("POST", f"{base}/{granted['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        after = list((await step(partner, 1)).values())  # only the notice arrives
    assert [d["type"] for d in after] == ["accord.consent.revoked"]
    assert after[0]["data"] == {
        "consent_id": granted["id"],
        "consent_version": 3,
        "instruction": "stop_further_use",
    }
    assert "+1-555" not in json.dumps(after[0])  # no personal data in the notice


async def test_R3_no_event_after_the_revocation_acknowledgement_is_delivered(
    api: str, staff: dict[str, str], settings: Settings, producer: AIOKafkaProducer
) -> None:
    rounds = 6
    async with tail(
        kafka(settings, kafka_client.partner(SHELTER)), settings.partner_topic(SHELTER)
    ) as partner:
        after: list[str] = []
        for _ in range(rounds):
            survivor, me = await enrolled(api, staff["harbor"])
            granted = (await me("POST", f"/v1/survivors/{survivor}/consents", consent())).json()
            await publish(settings, producer, survivor)  # right before: may or may not pass
            ack = await me("POST", f"/v1/survivors/{survivor}/consents/{granted['id']}/revoke")
            assert ack.status_code == 200
            after.append(await publish(settings, producer, survivor))  # right after: never
        got = await received(settings, partner, expect=rounds, timeout_s=20)
    delivered = {d["id"] for d in got}
    assert delivered.isdisjoint(after)
    assert len(delivered) >= 1  # the "before" events do flow: the test can see deliveries


async def test_R3_expired_consent_shares_nothing(
    api: str, staff: dict[str, str], settings: Settings, producer: AIOKafkaProducer
) -> None:
    survivor, me = await enrolled(api, staff["harbor"])
    past = consent(provision(start="2026-01-01T00:00:00Z", end="2026-02-01T00:00:00Z"))
    assert (await me("POST", f"/v1/survivors/{survivor}/consents", past)).status_code == 201
    listed = (await me("GET", f"/v1/survivors/{survivor}/consents")).json()
    assert [c["status"] for c in listed] == ["expired"]
    async with tail(
        kafka(settings, kafka_client.partner(SHELTER)), settings.partner_topic(SHELTER)
    ) as partner:
        event = await publish(settings, producer, survivor)
        got = await received(settings, partner, expect=1, timeout_s=6)
    assert event not in {d["id"] for d in got}


async def test_every_answer_gives_a_consent_the_status_the_list_gives(
    api: str, staff: dict[str, str]
) -> None:
    """Granting a consent whose only provision has ended answers ``expired``, as the list,
    its versions and an amendment of it do: one function computes the status."""
    survivor, me = await enrolled(api, staff["harbor"])
    ended = consent(provision(start="2026-01-01T00:00:00Z", end="2026-02-01T00:00:00Z"))
    base = f"/v1/survivors/{survivor}/consents"
    granted = await me("POST", base, ended)
    assert granted.status_code == 201 and granted.json()["status"] == "expired"
    cid = granted.json()["id"]
    assert [c["status"] for c in (await me("GET", base)).json()] == ["expired"]
    assert (await me("GET", f"{base}/{cid}/versions/1")).json()["status"] == "expired"
    amended = await me("PUT", f"{base}/{cid}", ended)
    assert amended.status_code == 200 and amended.json()["status"] == "expired"
    # A consent that is still running stays active in every answer.
    live = await me("POST", base, consent())
    assert live.json()["status"] == "active"
    statuses = {c["id"]: c["status"] for c in (await me("GET", base)).json()}
    assert statuses == {cid: "expired", live.json()["id"]: "active"}


async def test_R14_disclosures_list_releases_and_notices_without_values(
    api: str, staff: dict[str, str], settings: Settings, producer: AIOKafkaProducer
) -> None:
    survivor, me = await enrolled(api, staff["harbor"])
    granted = (await me("POST", f"/v1/survivors/{survivor}/consents", consent())).json()
    async with tail(
        kafka(settings, kafka_client.partner(SHELTER)), settings.partner_topic(SHELTER)
    ) as partner:
        event = await publish(settings, producer, survivor)
        await received(settings, partner, expect=1)
    await me("POST", f"/v1/survivors/{survivor}/consents/{granted['id']}/revoke")
    history = (await me("GET", f"/v1/survivors/{survivor}/disclosures")).json()
    releases = [h for h in history if h["kind"] == "release"]
    assert [(h["event_id"], h["partner_id"]) for h in releases] == [(event, SHELTER)]
    assert "identity" in releases[0]["categories"] and releases[0]["basis"] == ["consent"]
    assert [h["partner_id"] for h in history if h["kind"] == "revocation_notice"] == [SHELTER]
    assert "+1-555-0199" not in json.dumps(history)


async def test_preview_answers_with_the_real_policy(api: str, staff: dict[str, str]) -> None:
    survivor, me = await enrolled(api, staff["harbor"])
    path = f"/v1/survivors/{survivor}/preview"
    ask = {"partner_id": SHELTER, "event_type": "accord.referral.made", "age": 30}
    before = (await me("POST", path, ask)).json()
    assert before["released"] == []
    draft = (await me("POST", path, {**ask, "draft": consent()})).json()
    assert "survivor_name" in draft["released"] and "shelter_address" not in draft["released"]
    assert {"field": "shelter_address", "rules": ["R7"]} in draft["withheld"]
    # A draft is only tried, never stored.
    assert (await me("GET", f"/v1/survivors/{survivor}/consents")).json() == []


async def test_every_version_stays_readable(api: str, staff: dict[str, str]) -> None:
    survivor, me = await enrolled(api, staff["harbor"])
    base = f"/v1/survivors/{survivor}/consents"
    cid = (await me("POST", base, consent())).json()["id"]
    await me("PUT", f"{base}/{cid}", consent(provision(categories=["identity"])))
    versions = (await me("GET", f"{base}/{cid}/versions")).json()
    assert [(v["version"], v["provisions"][0]["categories"]) for v in versions] == [
        (1, ["*"]),
        (2, ["identity"]),
    ]
    assert (await me("GET", f"{base}/{cid}/versions/1")).json()["provisions"][0]["categories"] == [
        "*"
    ]


async def test_an_erased_survivor_stays_erased(
    api: str, staff: dict[str, str], settings: Settings, producer: AIOKafkaProducer
) -> None:
    """After `accord keys erase`: no new data key is made (410), so no new event about them
    is accepted; an event sealed to the erased key is dropped; their consents end, each
    partner that received data under one is sent a consent.revoked notice, and the relay's
    snapshot becomes a tombstone; nothing about them is delivered any more."""
    survivor, me = await enrolled(api, staff["harbor"])
    base = f"/v1/survivors/{survivor}/consents"
    granted = await me("POST", base, consent())
    assert granted.status_code == 201
    cid = granted.json()["id"]
    agency = Api(api, staff["agency"])
    assert (await agency("GET", f"/v1/events/keys/{survivor}")).json()["generation"] == 1
    first = cloudevent("harbor-outreach", survivor, FIELDS)
    old_key = EventSealer.for_settings(settings)  # an agency holding the survivor's first key
    stale = old_key(json.dumps(cloudevent("harbor-outreach", survivor, FIELDS)).encode())
    old_key.close()
    engine = make_engine(settings.sqlalchemy_url)
    sessions = make_sessionmaker(engine)
    async with (
        tail(kafka(settings, kafka_client.partner(SHELTER)), settings.partner_topic(SHELTER)) as p,
        tail(kafka(settings, kafka_client.RELAY), settings.topic_consents) as snapshots,
    ):
        await producer.send_and_wait(
            settings.topic_inbound,
            inbound_record(settings, first, fresh=True),
            key=survivor.encode(),
        )
        assert first["id"] in {d["id"] for d in await received(settings, p, expect=1)}
        await chained(sessions, first["id"])  # the shelter is an earlier recipient
        said: list[str] = []
        assert (
            await asyncio.to_thread(erase_command, settings, said.append, survivor, by="ops") == 1
        )
        assert said == [
            f"destroyed 1 data key(s) of survivor {survivor}; 1 consent(s) ended",
            "consent.revoked notices sent to 1 earlier recipient(s)",
        ]
        assert await tombstone(snapshots, survivor.encode())
        await producer.send_and_wait(settings.topic_inbound, stale, key=survivor.encode())
        got = await received(settings, p, expect=1)
        # a second run sends the notices again (recorded once), destroys nothing
        assert (
            await asyncio.to_thread(erase_command, settings, said.append, survivor, by="ops") == 0
        )
        got += await received(settings, p, expect=1)
    engine.dispose()
    mine = [d for d in got if d["subject"] == survivor]
    assert {d["type"] for d in mine} == {"accord.consent.revoked"}  # nothing else delivered
    assert {(d["data"]["consent_id"], d["data"]["consent_version"]) for d in mine} == {(cid, 2)}
    # No key is made again: the agency is told why, and cannot seal a new event.
    key = await agency("GET", f"/v1/events/keys/{survivor}")
    assert key.status_code == 410 and "erased" in key.json()["detail"]
    assert survivor not in key.text
    posted = await agency.http.post(
        "/v1/events",
        json=cloudevent("harbor-outreach", survivor, FIELDS),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert posted.status_code == 410, posted.text
    with pytest.raises(SurvivorErased):
        inbound_record(settings, cloudevent("harbor-outreach", survivor, FIELDS), fresh=True)
    # The consents ended with the erasure, and none is recorded again.
    listed = (await me("GET", base)).json()
    assert [(c["id"], c["version"], c["status"]) for c in listed] == [(cid, 2, "revoked")]
    assert listed[0]["recorded_by"]["actor"] == "erasure:ops"
    assert (await me("POST", base, consent())).status_code == 410
    disclosures = (await me("GET", f"/v1/survivors/{survivor}/disclosures")).json()
    notices = [d for d in disclosures if d.get("kind") == "revocation_notice"]
    assert len(notices) == 1, disclosures


async def chained(sessions: Any, event_id: str, timeout_s: float = 30) -> None:
    """Until the audit sink has chained the event's decisions (earlier recipients are read
    from the chain)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        with sessions() as session:
            if session.scalar(select(AuditEntry.seq).where(AuditEntry.event_id == event_id)):
                return
        await asyncio.sleep(0.2)
    raise AssertionError("the decision was not chained")


async def tombstone(consumer: Any, key: bytes, timeout_s: float = 30) -> bool:
    """Whether a null value for ``key`` arrives (the API's republish loop runs every 2 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            if any(r.key == key and r.value is None for r in records):
                return True
    return False
