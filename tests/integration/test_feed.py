"""The HTTP pull feed and the partner SDK on the real stack.

Partners of this module subscribe to an event type no other module publishes; three events
are relayed once, so each of them has exactly three sealed deliveries on its topic.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from nacl.public import PrivateKey

from services.auth.principals import Role
from services.auth.service import issue_credential
from services.broker.edges.feed import encode_cursor
from services.broker.pipeline import seal
from services.db import make_engine, make_sessionmaker, transaction
from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.acls import partner_group_prefix
from services.kafka.client import ADMIN, kafka
from services.kafka.provisioning import provision
from services.registry.schemas import PartnerIn
from services.registry.service import upsert_partner
from services.sdk import (
    Delivery,
    DeliveryRejected,
    HttpFeed,
    KafkaFeed,
    PartnerClient,
)
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.events import cloudevent, consent_change, inbound_record
from tests.support.keys import PARTNER_KEYS, RELAY_KEY, opener, with_keys
from tests.support.registry import partner, permit

pytestmark = pytest.mark.integration

TYPE = "accord.team.convened"
SURVIVOR = "sv-int-feed"
PARTNERS = ["feed-http", "feed-sdk", "feed-kafka", "feed-tamper", "feed-cli"]
RELAY = seal.public_key_of(RELAY_KEY)


class Api:
    def __init__(self, base: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=base, headers=headers, timeout=60)

    async def get(self, **params: Any) -> httpx.Response:
        return await self.http.get("/v1/feed", params=params)

    async def ack(self, **body: Any) -> httpx.Response:
        return await self.http.post("/v1/feed/ack", json=body)


@pytest.fixture(scope="module")
def keys(database: str, settings: Settings) -> dict[str, str]:
    sessions = make_sessionmaker(make_engine(database))
    rows = with_keys(
        {
            "agencies": [],
            "partners": [
                partner(p, "victim_services", "care_coordination", ["*"], event_types=[TYPE])
                for p in PARTNERS
            ],
        }
    )["partners"]
    for row in rows:  # every category the need-to-know table allows (no sensitive ones)
        row["agreements"][0]["categories"] = ["identity", "case_status", "service_need"]
    with transaction(sessions) as session:
        for row in rows:
            upsert_partner(session=session, partner=PartnerIn.model_validate(row))
        out = {p: issue_credential(session=session, role=Role.PARTNER, subject=p) for p in PARTNERS}
        out["agency"] = issue_credential(
            session=session, role=Role.AGENCY, subject="harbor-outreach"
        )
        return out


@pytest.fixture(scope="module")
async def events(
    keys: dict[str, str], settings: Settings, producer: AIOKafkaProducer, relay: None
) -> list[str]:
    """Three events relayed to every partner of this module; their ids, in order."""
    await provision(settings, partners=PARTNERS)  # each reads its topic as itself
    await topics.ensure_topics(kafka(settings, ADMIN), topics.partner_topics(settings, PARTNERS))
    await producer.send_and_wait(
        settings.topic_consents,
        consent_change(
            settings, SURVIVOR, permit(["victim_services"], ["care_coordination"], ["*"])
        ),
        key=SURVIVOR.encode(),
    )
    sent = [
        cloudevent(
            "harbor-outreach",
            SURVIVOR,
            {"survivor_name": "G", "case_status": f"step {n}", "team_id": f"t-{n}"},
            type=TYPE,
        )
        for n in range(3)
    ]
    async with tail(
        kafka(settings, kafka_client.partner(PARTNERS[-1])), settings.partner_topic(PARTNERS[-1])
    ) as c:
        for e in sent:
            await producer.send_and_wait(
                settings.topic_inbound, inbound_record(settings, e), key=SURVIVOR.encode()
            )
        got = await collect(c, until=3, timeout_s=60, opener=opener(PARTNERS[-1]))
    assert [g["id"] for g in got] == [e["id"] for e in sent]
    return [e["id"] for e in sent]


@pytest.fixture
async def feed_http(api: str, keys: dict[str, str]) -> AsyncIterator[Api]:
    client = Api(api, keys["feed-http"])
    yield client
    await client.http.aclose()


async def test_feed_holds_the_sealed_records(
    feed_http: Api, events: list[str], settings: Settings
) -> None:
    r = await feed_http.get()
    assert r.status_code == 200, r.text
    page = r.json()
    ids = [f"{e}/feed-http" for e in events]
    assert [i["delivery_id"] for i in page["items"]] == ids
    for item in page["items"]:
        assert item["sealed"] is True
        assert "step" not in item["record"]  # still sealed: the server never opened it
        head = json.loads(item["record"])
        assert set(head) == {"v", "delivery_id", "partner_id", "relay_key", "box"}
        opened = seal.open_delivery(
            item["record"].encode(),
            partner_id="feed-http",
            partner_key=PARTNER_KEYS["feed-http"],
            relay_key=RELAY,
        )
        assert opened.delivery_id == item["delivery_id"]
    # Exactly the bytes on the partner's topic.
    async with tail(
        kafka(settings, kafka_client.partner("feed-http")),
        settings.partner_topic("feed-http"),
        from_beginning=True,
    ) as c:
        raw = await collect(c, until=3, timeout_s=10, opener=lambda v: {"raw": v.decode()})
    assert [x["raw"] for x in raw] == [i["record"] for i in page["items"]]


async def test_unacknowledged_come_back_acknowledged_do_not(
    feed_http: Api, events: list[str]
) -> None:
    first = (await feed_http.get()).json()
    assert len(first["items"]) == 3
    # Continuing from the page's cursor: nothing new.
    assert (await feed_http.get(cursor=first["cursor"])).json()["items"] == []
    # Without acknowledgement, a fresh read starts over.
    again = (await feed_http.get(limit=2)).json()
    assert [i["delivery_id"] for i in again["items"]] == [
        i["delivery_id"] for i in first["items"][:2]
    ]
    rest = (await feed_http.get(cursor=again["cursor"])).json()
    assert [i["delivery_id"] for i in rest["items"]] == [first["items"][2]["delivery_id"]]

    # Acknowledge the first item: the others come back, it does not.
    r = await feed_http.ack(cursor=first["items"][0]["cursor"])
    assert r.status_code == 200
    after = (await feed_http.get()).json()
    assert [i["delivery_id"] for i in after["items"]] == [
        i["delivery_id"] for i in first["items"][1:]
    ]
    # Idempotent: the same ack again, and an older cursor, change nothing.
    assert (await feed_http.ack(cursor=first["items"][0]["cursor"])).status_code == 200
    assert (await feed_http.ack(cursor=encode_cursor("feed-http", {0: 0}))).status_code == 200
    assert len((await feed_http.get()).json()["items"]) == 2

    # By delivery id, out of order: the last one first, then the middle one.
    last, middle = first["items"][2]["delivery_id"], first["items"][1]["delivery_id"]
    r = await feed_http.ack(delivery_ids=[last])
    assert r.json()["not_found"] == []
    assert [i["delivery_id"] for i in (await feed_http.get()).json()["items"]] == [middle]
    r = await feed_http.ack(delivery_ids=[middle, last])
    assert r.json()["not_found"] == [last]  # already acknowledged
    assert (await feed_http.get()).json()["items"] == []
    r = await feed_http.ack(delivery_ids=[middle])  # again: still fine
    assert r.status_code == 200 and r.json()["not_found"] == [middle]


async def test_ack_is_durable_across_clients(api: str, keys: dict[str, str]) -> None:
    # A new connection: the acknowledged position is kept by Kafka, not by a connection.
    other = Api(api, keys["feed-http"])
    try:
        assert (await other.get()).json()["items"] == []
    finally:
        await other.http.aclose()


async def test_long_poll_waits_boundedly(feed_http: Api, events: list[str]) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    r = await feed_http.get(wait=1.5)
    assert r.status_code == 200 and r.json()["items"] == []
    assert 1.2 <= loop.time() - start < 8
    assert (await feed_http.get(wait=21)).status_code == 422
    assert (await feed_http.get(limit=0)).status_code == 422


async def test_only_its_own_feed(
    api: str, keys: dict[str, str], feed_http: Api, events: list[str]
) -> None:
    mine = (await feed_http.get(cursor=encode_cursor("feed-http", {0: 0}))).json()
    theirs = Api(api, keys["feed-sdk"])
    try:
        # feed-sdk's reads show feed-sdk's deliveries, whatever cursor it forges.
        page = (await theirs.get(cursor=encode_cursor("feed-sdk", {0: 0}))).json()
        assert {json.loads(i["record"])["partner_id"] for i in page["items"]} == {"feed-sdk"}
        # Another partner's cursor is refused, to read and to acknowledge.
        for cursor in (mine["cursor"], mine["items"][0]["cursor"]):
            r = await theirs.get(cursor=cursor)
            assert r.status_code == 422
            assert "another partner" in r.json()["detail"]
            assert (await theirs.ack(cursor=cursor)).status_code == 422
        # Malformed cursors.
        for bad in ("nope", "eyJ2IjoxfQ", encode_cursor("feed-sdk", {7: 1})):
            assert (await theirs.get(cursor=bad)).status_code == 422
        assert (await theirs.ack()).status_code == 422
        assert (await theirs.ack(cursor=page["cursor"], delivery_ids=["x"])).status_code == 422
    finally:
        await theirs.http.aclose()
    # Not a partner, or no key.
    agency = Api(api, keys["agency"])
    try:
        assert (await agency.get()).status_code == 403
        assert (await agency.ack(cursor=mine["cursor"])).status_code == 403
    finally:
        await agency.http.aclose()
    anonymous = Api(api, None)
    try:
        assert (await anonymous.get()).status_code == 401
        assert (await anonymous.ack(cursor=mine["cursor"])).status_code == 401
    finally:
        await anonymous.http.aclose()


# --- the SDK ---------------------------------------------------------------------------------


def sdk(pid: str, source: Any, key: PrivateKey | None = None) -> PartnerClient:
    return PartnerClient(pid, key or PARTNER_KEYS[pid], relay_key=RELAY, source=source)


async def test_sdk_over_http_opens_and_acks_after_the_handler(
    api: str, keys: dict[str, str], events: list[str]
) -> None:
    # The wrong key: a clear exception, nothing handled, nothing acknowledged.
    async with sdk("feed-sdk", HttpFeed(api, api_key=keys["feed-sdk"]), PrivateKey.generate()) as c:
        with pytest.raises(DeliveryRejected, match="could not be opened"):
            await c.poll(lambda d: None, wait_s=0)

    # A failing handler: not acknowledged, so it comes again.
    seen: list[Delivery] = []

    def failing(d: Delivery) -> None:
        seen.append(d)
        raise RuntimeError("downstream system unavailable")

    async with sdk("feed-sdk", HttpFeed(api, api_key=keys["feed-sdk"])) as c:
        with pytest.raises(RuntimeError):
            await c.poll(failing, wait_s=0)
        assert [d.id for d in seen] == events[:1]

        got: list[Delivery] = []

        async def handler(d: Delivery) -> None:
            got.append(d)

        assert await c.run(handler, wait_s=0, max_deliveries=3) == 3
    assert [d.id for d in got] == events
    assert [d.delivery_id for d in got] == [f"{e}/feed-sdk" for e in events]
    assert got[0].type == TYPE and got[0].data["case_status"] == "step 0"
    assert all(d.sealed for d in got)
    # Acknowledged: the feed has nothing more for feed-sdk.
    async with sdk("feed-sdk", HttpFeed(api, api_key=keys["feed-sdk"])) as c:
        assert await c.poll(handler, wait_s=0) == 0


async def test_sdk_over_kafka(settings: Settings, events: list[str]) -> None:
    group = f"{partner_group_prefix(settings, 'feed-kafka')}{uuid.uuid4().hex[:6]}"
    topic = settings.partner_topic("feed-kafka")
    conn = kafka(settings, kafka_client.partner("feed-kafka"))

    def source() -> KafkaFeed:
        return KafkaFeed(conn, topic=topic, group_id=group)

    async with sdk("feed-kafka", source(), PrivateKey.generate()) as c:
        with pytest.raises(DeliveryRejected):
            await c.run(lambda d: None, wait_s=5, max_deliveries=1)
    got: list[Delivery] = []
    async with sdk("feed-kafka", source()) as c:
        await c.run(got.append, wait_s=2, max_deliveries=2)
    async with sdk("feed-kafka", source()) as c:  # resumes at the committed offset
        await c.run(got.append, wait_s=2, max_deliveries=1)
    assert [d.id for d in got] == events


async def test_tampered_record_fails_verification_and_is_not_acked(
    api: str,
    keys: dict[str, str],
    settings: Settings,
    producer: AIOKafkaProducer,
    events: list[str],
) -> None:
    feed = Api(api, keys["feed-tamper"])
    try:
        page = (await feed.get()).json()
        assert len(page["items"]) == 3
        assert (await feed.ack(cursor=page["cursor"])).status_code == 200
        # Flip one bit of the sealed box; then relabel an intact one for another partner.
        doc = json.loads(page["items"][0]["record"])
        box = bytearray(base64.b64decode(doc["box"]))
        box[40] ^= 1
        tampered = {**doc, "box": base64.b64encode(bytes(box)).decode()}
        other = Api(api, keys["feed-http"])
        intact = (await other.get(cursor=encode_cursor("feed-http", {0: 0}), limit=1)).json()
        await other.http.aclose()
        relabelled = {**json.loads(intact["items"][0]["record"]), "partner_id": "feed-tamper"}
        topic = settings.partner_topic("feed-tamper")
        for record in (tampered, relabelled):
            await producer.send_and_wait(topic, json.dumps(record).encode())
            async with sdk("feed-tamper", HttpFeed(api, api_key=keys["feed-tamper"])) as c:
                with pytest.raises(DeliveryRejected):
                    await c.poll(lambda d: None, wait_s=5)
            # Not acknowledged: it is still in front.
            items = (await feed.get()).json()["items"]
            assert [i["delivery_id"] for i in items] == [record["delivery_id"]]
            # The partner's operator looked at it and moves on.
            assert (await feed.ack(cursor=items[0]["cursor"])).status_code == 200
    finally:
        await feed.http.aclose()


async def test_accord_tail_prints_one_line_per_delivery(
    api: str, keys: dict[str, str], events: list[str], tmp_path: Path
) -> None:
    key_file = tmp_path / "feed-cli.key"
    key_file.write_text(base64.b64encode(bytes(PARTNER_KEYS["feed-cli"])).decode())
    cmd = [
        str(Path(sys.executable).with_name("accord")),
        "tail",
        "--partner",
        "feed-cli",
        "--key-file",
        str(key_file),
        "--http",
        api,
        "--api-key",
        keys["feed-cli"],
        "--relay-key",
        RELAY,
        "--max",
        "3",
    ]
    lines = await accord_lines(cmd)
    assert [x["event_id"] for x in lines] == events
    assert lines[0]["type"] == TYPE
    assert lines[0]["fields"]["case_status"] == "step 0"
    # Tail only looks by default: the deliveries are still unacknowledged.
    left = (await Api(api, keys["feed-cli"]).get()).json()["items"]
    assert len(left) == 3


async def accord_lines(cmd: list[str]) -> list[dict[str, Any]]:
    """Run an ``accord`` command to its end; the JSON lines it printed."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


async def test_accord_tail_over_kafka_as_the_partners_own_principal(
    settings: Settings, events: list[str], tmp_path: Path
) -> None:
    """`accord tail --bootstrap` connects as `partner.feed-cli` (SASL/SCRAM over TLS, with the
    password from the credentials file) and reads its topic with a group of its own."""
    key_file = tmp_path / "feed-cli.key"
    key_file.write_text(base64.b64encode(bytes(PARTNER_KEYS["feed-cli"])).decode())
    cmd = [
        str(Path(sys.executable).with_name("accord")),
        "tail",
        "--partner",
        "feed-cli",
        "--key-file",
        str(key_file),
        "--bootstrap",
        settings.bootstrap_servers,
        "--topic",
        settings.partner_topic("feed-cli"),
        "--group",
        f"{partner_group_prefix(settings, 'feed-cli')}tail-{uuid.uuid4().hex[:6]}",
        "--relay-key",
        RELAY,
        "--max",
        "3",
    ]
    assert [line["event_id"] for line in await accord_lines(cmd)] == events
