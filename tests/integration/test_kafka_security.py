"""Kafka itself refuses what a principal may not do: the real broker of `accord dev up`, with
SASL/SCRAM over TLS and the ACLs of services/kafka/acls.py (issue #8, item 1).

Every refusal is paired with the same principal (or the same call) succeeding where it is
allowed, so a test cannot pass because a connection was broken in some other way.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.acls import partner_group_prefix
from services.kafka.client import ADMIN, API, AUDIT, RELAY, KafkaConn, kafka
from services.kafka.provisioning import provision
from services.settings import Settings

# Partners of this module only (Kafka principals and topics, not in the registry), so the
# markers written on their topics reach no other test.
SHELTER, CLINIC = "kafka-sec-shelter", "kafka-sec-clinic"
AGENCY = "harbor-outreach"


@pytest.fixture(scope="module")
async def marked(settings: Settings, kafka_topics: list[str]) -> AsyncIterator[bytes]:
    """A marker record on every topic of the session (written by the operator), so that
    "read nothing" means "refused", not "empty"."""
    marker = f"marker-{uuid.uuid4().hex}".encode()
    await provision(settings, partners=[SHELTER, CLINIC])
    await topics.ensure_topics(
        kafka(settings, ADMIN), topics.partner_topics(settings, [SHELTER, CLINIC])
    )
    p = AIOKafkaProducer(**kafka(settings, ADMIN).kwargs(), acks="all")
    await p.start()
    try:
        for topic in (
            settings.topic_inbound,
            settings.topic_decisions,
            settings.topic_deadletter,  # the rejection sink logs it as "not a dead letter"
            settings.partner_topic(SHELTER),
            settings.partner_topic(CLINIC),
        ):
            await p.send_and_wait(topic, marker, key=b"marker")
    finally:
        await p.stop()
    yield marker


async def read_all(settings: Settings, conn: KafkaConn, topic: str) -> list[bytes]:
    """Every record of ``topic`` read as ``conn`` (assigned, no consumer group)."""
    parts = await topics.partitions(kafka(settings, ADMIN), topic)
    consumer = AIOKafkaConsumer(**conn.kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        got: list[bytes] = []
        for _ in range(10):
            batch = await consumer.getmany(timeout_ms=300)
            got += [r.value for records in batch.values() for r in records if r.value]
        return got
    finally:
        await consumer.stop()


async def refused(settings: Settings, conn: KafkaConn, topic: str) -> bool:
    """True if ``conn`` reads nothing of ``topic`` (which holds the marker) because the broker
    refuses the fetches: aiokafka raises the refusal, or only logs it and returns nothing."""
    try:
        got = await read_all(settings, conn, topic)
    except TopicAuthorizationFailedError:
        return True
    return got == []


async def join(conn: KafkaConn, topic: str, group: str) -> None:
    """Subscribe to ``topic`` in ``group`` and poll once (raises what the broker refuses)."""
    consumer = AIOKafkaConsumer(
        topic, **conn.kwargs(), group_id=group, auto_offset_reset="earliest"
    )
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=3000)
    finally:
        await consumer.stop()


async def write(conn: KafkaConn, topic: str) -> None:
    producer = AIOKafkaProducer(**conn.kwargs(), acks="all", request_timeout_ms=10000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"probe")
    finally:
        await producer.stop()


# --- partners -----------------------------------------------------------------------------------


async def test_a_partner_reads_its_own_topic_but_not_another_partners(
    settings: Settings, marked: bytes
) -> None:
    shelter = kafka(settings, kafka_client.partner(SHELTER))
    own_group = f"{partner_group_prefix(settings, SHELTER)}{uuid.uuid4().hex[:6]}"
    assert marked in await read_all(settings, shelter, settings.partner_topic(SHELTER))
    await join(shelter, settings.partner_topic(SHELTER), own_group)
    # With its own group, by subscription: refused at the topic.
    with pytest.raises(TopicAuthorizationFailedError):
        await join(shelter, settings.partner_topic(CLINIC), own_group)
    # Fetching the partitions directly (no group, offsets given): refused too.
    assert await refused(settings, shelter, settings.partner_topic(CLINIC))
    # The other partner still reads its own.
    clinic = kafka(settings, kafka_client.partner(CLINIC))
    assert marked in await read_all(settings, clinic, settings.partner_topic(CLINIC))


async def test_a_partner_cannot_use_another_partners_consumer_group(
    settings: Settings, marked: bytes
) -> None:
    shelter = kafka(settings, kafka_client.partner(SHELTER))
    clinics_group = f"{partner_group_prefix(settings, CLINIC)}{uuid.uuid4().hex[:6]}"
    with pytest.raises(GroupAuthorizationFailedError):
        await join(shelter, settings.partner_topic(SHELTER), clinics_group)
    with pytest.raises(GroupAuthorizationFailedError):  # nor the relay's
        await join(shelter, settings.partner_topic(SHELTER), settings.relay_group)


# --- who reads and writes what ------------------------------------------------------------------

# (principal, topic attribute, may read). The topic attribute is a Settings field, or
# "partner:<id>" for that partner's topic.
READS: list[tuple[str, str, bool]] = [
    (RELAY, "topic_inbound", True),
    (API, "topic_inbound", False),
    (AUDIT, "topic_inbound", False),
    (kafka_client.agency(AGENCY), "topic_inbound", False),
    (kafka_client.partner(SHELTER), "topic_inbound", False),
    (AUDIT, "topic_decisions", True),
    (RELAY, "topic_decisions", False),
    (API, "topic_decisions", False),
    (kafka_client.agency(AGENCY), "topic_decisions", False),
    (kafka_client.partner(SHELTER), "topic_decisions", False),
    (kafka_client.agency(AGENCY), f"partner:{SHELTER}", False),
    (AUDIT, f"partner:{SHELTER}", False),
    # The sink worker (accord-audit) stores the dead letters; the API only lists them (SQL).
    (AUDIT, "topic_deadletter", True),
    (API, "topic_deadletter", False),
]


def topic_of(settings: Settings, attr: str) -> str:
    if attr.startswith("partner:"):
        return settings.partner_topic(attr.removeprefix("partner:"))
    name: str = getattr(settings, attr)
    return name


@pytest.mark.parametrize(("principal", "attr", "allowed"), READS)
async def test_only_the_relay_reads_inbound_and_only_the_audit_sink_reads_decisions(
    settings: Settings, marked: bytes, principal: str, attr: str, allowed: bool
) -> None:
    conn, topic = kafka(settings, principal), topic_of(settings, attr)
    if allowed:
        assert marked in await read_all(settings, conn, topic)
    else:
        assert await refused(settings, conn, topic)


# (principal, topic attribute, may write)
WRITES: list[tuple[str, str, bool]] = [
    (kafka_client.agency(AGENCY), "topic_inbound", True),
    (kafka_client.agency(AGENCY), f"partner:{SHELTER}", False),
    (kafka_client.agency(AGENCY), "topic_decisions", False),
    (kafka_client.agency(AGENCY), "topic_consents", False),
    (kafka_client.agency(AGENCY), "topic_deadletter", False),
    (kafka_client.agency(AGENCY), "topic_seen", False),
    (kafka_client.partner(SHELTER), f"partner:{SHELTER}", False),  # no forged deliveries
    (kafka_client.partner(SHELTER), "topic_inbound", False),
    (API, "topic_consents", True),
    (API, "topic_decisions", False),
    (AUDIT, "topic_decisions", False),
    (RELAY, "topic_consents", False),
]


@pytest.mark.parametrize(("principal", "attr", "allowed"), WRITES)
async def test_an_agency_cannot_write_a_partner_topic_nor_anything_but_inbound(
    settings: Settings, marked: bytes, principal: str, attr: str, allowed: bool
) -> None:
    conn, topic = kafka(settings, principal), topic_of(settings, attr)
    if allowed:
        await write(conn, topic)
    else:
        with pytest.raises(TopicAuthorizationFailedError):
            await write(conn, topic)


# --- authentication and TLS ---------------------------------------------------------------------


async def connects(**kwargs: Any) -> None:
    consumer = AIOKafkaConsumer(**kwargs, request_timeout_ms=5000)
    try:
        await consumer.start()
        await consumer.topics()
    finally:
        await consumer.stop()


async def test_the_right_credentials_connect(settings: Settings, marked: bytes) -> None:
    await connects(**kafka(settings, kafka_client.partner(SHELTER)).kwargs())


async def test_a_plaintext_client_is_refused(settings: Settings) -> None:
    with pytest.raises(KafkaConnectionError):
        await connects(bootstrap_servers=settings.bootstrap_servers)


async def test_tls_without_authentication_is_refused(settings: Settings) -> None:
    ctx = kafka_client.ssl_context(str(kafka_client.ca_path(settings)))
    with pytest.raises(KafkaConnectionError):
        await connects(
            bootstrap_servers=settings.bootstrap_servers, security_protocol="SSL", ssl_context=ctx
        )


async def test_a_wrong_password_is_refused(settings: Settings, marked: bytes) -> None:
    good = kafka(settings, kafka_client.partner(SHELTER)).kwargs()
    with pytest.raises(KafkaConnectionError):
        await connects(**{**good, "sasl_plain_password": good["sasl_plain_password"] + "x"})
    # Another principal's password does not open this one.
    other = kafka(settings, kafka_client.partner(CLINIC)).password
    with pytest.raises(KafkaConnectionError):
        await connects(**{**good, "sasl_plain_password": other})


async def test_an_unknown_principal_is_refused(settings: Settings, marked: bytes) -> None:
    good = kafka(settings, kafka_client.partner(SHELTER)).kwargs()
    with pytest.raises(KafkaConnectionError):
        await connects(**{**good, "sasl_plain_username": "partner.nobody"})


async def test_the_broker_certificate_is_checked(settings: Settings, marked: bytes) -> None:
    """A client that trusts only the system's CAs refuses the broker: our clients trust the
    stack's CA and nothing else, and check the host name against the certificate."""
    good = kafka(settings, kafka_client.partner(SHELTER)).kwargs()
    with pytest.raises(KafkaConnectionError):
        await connects(**{**good, "ssl_context": ssl.create_default_context()})
