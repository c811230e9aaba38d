"""The admin API on the real stack: a partner registered over HTTP receives the next event,
sealed to the key it registered; suspended, it receives nothing more; bad input is a 422."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.auth.principals import Role
from services.auth.service import issue_credential
from services.broker.pipeline import seal
from services.db import make_engine, make_sessionmaker, transaction
from services.decision_records import split_decisions
from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.client import ADMIN, AUDIT, kafka
from services.kafka.provisioning import provision
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.events import cloudevent, consent_change, inbound_record
from tests.support.keys import PARTNER_KEYS, opener
from tests.support.registry import permit

pytestmark = pytest.mark.integration

NEW = "admin-new-vs"
# An event type no other test module publishes, so this partner changes nobody's counts.
TYPE = "accord.referral.acknowledged"
SURVIVOR = "sv-int-admin"
DECISION_WAIT_S = 90


def body(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "New Victim Services",
        "type": "victim_services",
        "jurisdiction": "state-a",
        "vetted": True,
        "training_attested_until": "2030-01-01T00:00:00Z",
        "public_key": seal.public_key_of(PARTNER_KEYS[NEW]),
        "agreements": [
            {
                "id": f"mou-{NEW}",
                "purposes": ["service_referral"],
                "categories": ["identity", "case_status"],
                "valid_from": "2026-01-01T00:00:00Z",
                "valid_until": "2030-01-01T00:00:00Z",
            }
        ],
    }
    doc.update(over)
    return doc


@pytest.fixture(scope="module")
def creds(database: str) -> dict[str, str]:
    sessions = make_sessionmaker(make_engine(database))
    with transaction(sessions) as session:
        return {
            "admin": issue_credential(session=session, role=Role.ADMIN, subject="ops-1"),
            "partner": issue_credential(session=session, role=Role.PARTNER, subject="metro-police"),
            "agency": issue_credential(
                session=session, role=Role.AGENCY, subject="harbor-outreach"
            ),
        }


@pytest.fixture(scope="module")
async def admin(api: str, creds: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {creds['admin']}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as client:
        yield client
        # Leave no subscription behind for the modules that run after this one.
        await client.delete(f"/v1/admin/partners/{NEW}/subscriptions/sub-{NEW}")


async def deliver_one(
    settings: Settings, producer: AIOKafkaProducer, data: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Publish one event; return NEW's decision record for it and what NEW received."""
    event = cloudevent("harbor-outreach", SURVIVOR, data, type=TYPE)
    async with (
        tail(kafka(settings, AUDIT), settings.topic_decisions) as decisions,
        tail(kafka(settings, kafka_client.partner(NEW)), settings.partner_topic(NEW)) as topic,
    ):
        sent = await producer.send_and_wait(
            settings.topic_inbound, inbound_record(settings, event), key=SURVIVOR.encode()
        )
        mine: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        # Generous: on a fresh CI broker the session's first relayed event has waited long.
        deadline = loop.time() + DECISION_WAIT_S
        while not mine and loop.time() < deadline:
            got = await collect(decisions, until=1, timeout_s=1, split=split_decisions)
            mine += [d for d in got if d["event_id"] == event["id"] and d["partner_id"] == NEW]
        # The delivery is written in the same transaction as the decision record.
        received = await collect(topic, until=0, timeout_s=1, settle_s=0.5, opener=opener(NEW))
    if not mine:
        where = await relayed_past(settings, TopicPartition(sent.topic, sent.partition))
        state = (
            "the relay committed past the event without a decision for the new partner"
            if where is not None and where > sent.offset
            else f"the relay had not committed it (group offset {where}, event {sent.offset})"
        )
        pytest.fail(f"no decision for the new partner in {DECISION_WAIT_S} s: {state}")
    assert len(mine) == 1, mine
    return mine[0], [d for d in received if d["id"] == event["id"]]


async def relayed_past(settings: Settings, tp: TopicPartition) -> int | None:
    """The relay group's committed offset of ``tp`` (None: nothing committed)."""
    admin = AIOKafkaAdminClient(**kafka(settings, ADMIN).kwargs())
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(settings.relay_group, partitions=[tp])
    finally:
        await admin.close()
    meta = got.get(tp)
    return None if meta is None or meta.offset < 0 else int(meta.offset)


async def test_not_admin_is_401_or_403(api: str, creds: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        assert (await client.get("/v1/admin/partners")).status_code == 401
        bad = {"Authorization": "Bearer acc_0000_nope"}
        assert (await client.get("/v1/admin/partners", headers=bad)).status_code == 401
        for who in ("partner", "agency"):
            h = {"Authorization": f"Bearer {creds[who]}"}
            assert (await client.get("/v1/admin/partners", headers=h)).status_code == 403
            r = await client.put(f"/v1/admin/partners/{NEW}", json=body(), headers=h)
            assert r.status_code == 403
            assert "admin" in r.json()["detail"]
            r = await client.patch(
                "/v1/admin/partners/metro-police", json={"status": "suspended"}, headers=h
            )
            assert r.status_code == 403


async def test_registered_partner_gets_the_next_event_sealed_to_its_key(
    admin: httpx.AsyncClient, settings: Settings, producer: AIOKafkaProducer, relay: None
) -> None:
    await producer.send_and_wait(
        settings.topic_consents,
        consent_change(
            settings, SURVIVOR, permit(["victim_services"], ["service_referral"], ["*"])
        ),
        key=SURVIVOR.encode(),
    )
    r = await admin.put(f"/v1/admin/partners/{NEW}", json=body())
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["topic"] == settings.partner_topic(NEW)
    assert out["subscriptions"] == []
    # Its topic exists before the first delivery.
    assert await topics.partitions(kafka(settings, ADMIN), out["topic"], timeout_s=2)
    # The operator's step after a registration (`accord kafka provision`): the partner's
    # Kafka principal, allowed its own topic only; deliver_one reads as that principal.
    await provision(settings, partners=[NEW])

    r = await admin.put(
        f"/v1/admin/partners/{NEW}/subscriptions/sub-{NEW}",
        json={"event_types": [TYPE], "purpose": "service_referral"},
    )
    assert r.status_code == 201, r.text

    data = {"survivor_name": "F", "case_status": "open", "referral_id": "r-1"}
    decision, received = await deliver_one(settings, producer, data)
    assert decision["outcome"] == "allow", decision
    assert len(received) == 1
    assert received[0]["data"] == data  # opened with the key it registered
    assert received[0]["accorddeliveryid"] == decision["delivery_id"]

    # The registration reads back; replacing it without subscriptions keeps them.
    r = await admin.put(f"/v1/admin/partners/{NEW}", json=body(name="Renamed"))
    assert r.status_code == 200
    assert [s["id"] for s in r.json()["subscriptions"]] == [f"sub-{NEW}"]
    got = (await admin.get(f"/v1/admin/partners/{NEW}")).json()
    assert got["name"] == "Renamed"
    assert got["agreements"][0]["categories"] == ["identity", "case_status"]
    listed = (await admin.get("/v1/admin/partners")).json()
    assert NEW in [p["id"] for p in listed]


async def test_suspended_partner_gets_nothing_from_the_next_event(
    admin: httpx.AsyncClient, settings: Settings, producer: AIOKafkaProducer, relay: None
) -> None:
    r = await admin.patch(f"/v1/admin/partners/{NEW}", json={"status": "suspended"})
    assert r.status_code == 200
    assert r.json()["status"] == "suspended"
    decision, received = await deliver_one(settings, producer, {"case_status": "open"})
    assert decision["outcome"] == "deny"
    assert received == []
    # Reactivated, it receives again.
    r = await admin.patch(f"/v1/admin/partners/{NEW}", json={"status": "active"})
    assert r.json()["status"] == "active"
    decision, received = await deliver_one(settings, producer, {"case_status": "closed"})
    assert decision["outcome"] == "allow"
    assert [d["data"] for d in received] == [{"case_status": "closed"}]


async def test_responses_hold_no_secrets(admin: httpx.AsyncClient) -> None:
    text = (await admin.get("/v1/admin/partners")).text
    assert "acc_" not in text and "secret" not in text
    for p in json.loads(text):
        assert set(p) == {
            "id",
            "name",
            "type",
            "jurisdiction",
            "status",
            "vetted",
            "immigration_enforcement",
            "training_attested_until",
            "public_key",
            "topic",
            "agreements",
            "subscriptions",
        }


async def test_agencies(admin: httpx.AsyncClient) -> None:
    from nacl.signing import SigningKey

    key = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
    doc = {"name": "Admin Test Agency", "jurisdiction": "state-b", "public_key": key}
    r = await admin.put("/v1/admin/agencies/admin-test-agency", json=doc)
    assert r.status_code == 201
    r = await admin.put("/v1/admin/agencies/admin-test-agency", json={**doc, "name": "Renamed"})
    assert r.status_code == 200
    assert (await admin.get("/v1/admin/agencies/admin-test-agency")).json()["name"] == "Renamed"
    ids = [a["id"] for a in (await admin.get("/v1/admin/agencies")).json()]
    assert {"harbor-outreach", "admin-test-agency"} <= set(ids)
    assert (await admin.get("/v1/admin/agencies/nobody")).status_code == 404
    r = await admin.put("/v1/admin/agencies/x", json={**doc, "jurisdiction": "atlantis"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "jurisdiction"]


def agreement(**over: Any) -> list[dict[str, Any]]:
    return [{**body()["agreements"][0], **over}]


@pytest.mark.parametrize(
    ("over", "loc", "fragment"),
    [
        ({"type": "spy_agency"}, ["body", "type"], "unknown partner type"),
        ({"jurisdiction": "atlantis"}, ["body", "jurisdiction"], "unknown jurisdiction"),
        (
            {"agreements": agreement(purposes=["service_referral", "profit"])},
            ["body", "agreements", "0", "purposes", "1"],
            "unknown purpose",
        ),
        (
            {"agreements": agreement(categories=["identity", "gossip"])},
            ["body", "agreements", "0", "categories", "1"],
            "unknown category",
        ),
        (
            {"agreements": agreement(valid_until="2025-01-01T00:00:00Z")},
            ["body", "agreements", "0", "valid_until"],
            "after valid_from",
        ),
        (
            {"subscriptions": {"s1": {"event_types": ["accord.x.y"], "purpose": "investigation"}}},
            ["body", "subscriptions", "s1", "event_types", "0"],
            "unknown event type",
        ),
        (
            {"subscriptions": {"s1": {"event_types": [TYPE], "purpose": "curiosity"}}},
            ["body", "subscriptions", "s1", "purpose"],
            "unknown purpose",
        ),
        ({"public_key": "not base64!"}, ["body", "public_key"], "base64"),
        (
            {"public_key": base64.b64encode(b"x" * 31).decode()},
            ["body", "public_key"],
            "32 bytes",
        ),
        (
            {"public_key": base64.b64encode(bytes(32)).decode()},  # a low-order point
            ["body", "public_key"],
            "Curve25519",
        ),
        ({"status": "sleeping"}, ["body", "status"], ""),
        ({"clearance": "top"}, ["body", "clearance"], ""),
    ],
)
async def test_bad_partner_is_422_saying_where(
    admin: httpx.AsyncClient, over: dict[str, Any], loc: list[str], fragment: str
) -> None:
    r = await admin.put("/v1/admin/partners/admin-bad", json=body(**over))
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert [e["loc"] for e in errors] == [loc]
    assert fragment in errors[0]["msg"]
    assert (await admin.get("/v1/admin/partners/admin-bad")).status_code == 404


async def test_bad_subscription_and_patch_are_422(admin: httpx.AsyncClient) -> None:
    url = "/v1/admin/partners/metro-police/subscriptions/admin-sub"
    r = await admin.put(url, json={"event_types": ["accord.nope.nope"], "purpose": "investigation"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "event_types", "0"]
    r = await admin.patch("/v1/admin/partners/metro-police", json={"public_key": "AAAA"})
    assert r.status_code == 422
    assert (await admin.get("/v1/admin/partners/metro-police")).json()["status"] == "active"


async def test_ids_of_another_partner_are_409(admin: httpx.AsyncClient) -> None:
    # sub-metro-police and mou-metro-police belong to metro-police (see tests/support/registry.py).
    r = await admin.put(
        f"/v1/admin/partners/{NEW}/subscriptions/sub-metro-police",
        json={"event_types": [TYPE], "purpose": "service_referral"},
    )
    assert r.status_code == 409
    r = await admin.put(
        f"/v1/admin/partners/{NEW}", json=body(agreements=agreement(id="mou-metro-police"))
    )
    assert r.status_code == 409


async def test_unknown_partner_and_subscription_are_404(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/v1/admin/partners/nobody")).status_code == 404
    assert (
        await admin.patch("/v1/admin/partners/nobody", json={"status": "suspended"})
    ).status_code == 404
    sub = {"event_types": [TYPE], "purpose": "service_referral"}
    assert (
        await admin.put("/v1/admin/partners/nobody/subscriptions/s", json=sub)
    ).status_code == 404
    assert (await admin.delete(f"/v1/admin/partners/{NEW}/subscriptions/none")).status_code == 404
