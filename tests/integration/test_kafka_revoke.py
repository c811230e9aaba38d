"""Revoking and rotating a Kafka principal on the real broker (issue #8: "credentials can be
rotated and revoked, and a revoked credential stops working at once"), and the client quotas
that provisioning sets.

The principals here are made for this module only (a random suffix), so revoking them reaches
no other test nor a session running beside this one. Every refusal is paired with a principal
provisioned alike that keeps working.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, TopicAuthorizationFailedError

from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.acls import CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE
from services.kafka.admin import (
    Binding,
    create_acls,
    delete_acls,
    delete_acls_under,
    describe_acls,
    describe_quotas,
    principal_filter,
)
from services.kafka.client import ADMIN, KafkaConn, KafkaCredentialMissing, kafka
from services.kafka.protocol import Op, Pattern, Resource
from services.kafka.provisioning import provision, revoke, rotate
from services.settings import Settings

RUN = uuid.uuid4().hex[:6]
CUT, KEPT, ROTATED = (f"revoke-{RUN}-{n}" for n in ("cut", "kept", "rotated"))  # partners
AGENCY_CUT, AGENCY_KEPT = f"revoke-{RUN}-agency-cut", f"revoke-{RUN}-agency-kept"
# A fetch that reached the broker before the revocation was authorized then: it may still
# return what is written while it waits (up to the consumer's fetch.max.wait.ms). The test
# writes after that wait, so that what it checks is the next request.
FETCH_MAX_WAIT_MS = 100


@pytest.fixture(scope="module")
async def principals(settings: Settings, kafka_topics: list[str]) -> AsyncIterator[None]:
    await provision(settings, agencies=[AGENCY_CUT, AGENCY_KEPT], partners=[CUT, KEPT, ROTATED])
    await topics.ensure_topics(
        kafka(settings, ADMIN), topics.partner_topics(settings, [CUT, KEPT, ROTATED])
    )
    yield
    # Leave nothing behind on the shared broker, whatever a test did.
    for principal in (
        *(kafka_client.partner(p) for p in (CUT, KEPT, ROTATED)),
        *(kafka_client.agency(a) for a in (AGENCY_CUT, AGENCY_KEPT)),
    ):
        await revoke(settings, principal)


async def put(settings: Settings, topic: str, value: bytes) -> None:
    """Write ``value`` as the operator."""
    p = AIOKafkaProducer(**kafka(settings, ADMIN).kwargs(), acks="all")
    await p.start()
    try:
        await p.send_and_wait(topic, value, key=b"k")
    finally:
        await p.stop()


async def reader(settings: Settings, conn: KafkaConn, topic: str) -> AIOKafkaConsumer:
    """A started consumer of every partition of ``topic`` from the start (no group)."""
    parts = await topics.partitions(kafka(settings, ADMIN), topic)
    consumer = AIOKafkaConsumer(
        **conn.kwargs(), enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    return consumer


async def read_until(consumer: AIOKafkaConsumer, value: bytes, *, timeout_s: float) -> bool:
    """Poll until ``value`` is read (True) or ``timeout_s`` passes (False); raises what the
    broker refuses."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        batch = await consumer.getmany(timeout_ms=200)
        if any(r.value == value for records in batch.values() for r in records):
            return True
    return False


async def authenticate(conn: KafkaConn) -> None:
    """Open one connection to the broker and authenticate (SASL/SCRAM), nothing else."""
    host, port = conn.bootstrap.rsplit(":", 1)
    kw = conn.kwargs()
    c = await create_conn(
        host,
        int(port),
        security_protocol=kw["security_protocol"],
        ssl_context=kw["ssl_context"],
        sasl_mechanism=kw["sasl_mechanism"],
        sasl_plain_username=conn.principal,
        sasl_plain_password=conn.password,
        request_timeout_ms=5000,
    )
    c.close()


async def test_a_revoked_partner_is_refused_at_its_next_fetch_and_cannot_connect_again(
    settings: Settings, principals: None
) -> None:
    cut = kafka(settings, kafka_client.partner(CUT))  # its password, kept by the "thief"
    kept = kafka(settings, kafka_client.partner(KEPT))
    before, after = (f"{n}-{uuid.uuid4().hex}".encode() for n in ("before", "after"))
    for p in (CUT, KEPT):
        await put(settings, settings.partner_topic(p), before)
    cut_reader = await reader(settings, cut, settings.partner_topic(CUT))
    kept_reader = await reader(settings, kept, settings.partner_topic(KEPT))
    try:
        # Both connected and reading their own topic.
        assert await read_until(cut_reader, before, timeout_s=10)
        assert await read_until(kept_reader, before, timeout_s=10)

        deleted = await revoke(settings, kafka_client.partner(CUT))
        assert {d[1] for d in deleted} >= {settings.partner_topic(CUT)}
        await asyncio.sleep(3 * FETCH_MAX_WAIT_MS / 1000)
        for p in (CUT, KEPT):
            await put(settings, settings.partner_topic(p), after)

        # The open connection is refused at its next fetch: it never reads what came after.
        with pytest.raises(TopicAuthorizationFailedError):
            await read_until(cut_reader, after, timeout_s=10)
        # The other partner, provisioned alike, reads on.
        assert await read_until(kept_reader, after, timeout_s=10)
    finally:
        await cut_reader.stop()
        await kept_reader.stop()

    # No new connection authenticates with the revoked password; the kept one does.
    with pytest.raises(SaslAuthenticationFailed):
        await authenticate(cut)
    await authenticate(kept)
    # Nothing of it is left: no ACL, no password in the credentials file.
    admin = kafka(settings, ADMIN)
    assert await describe_acls(admin, principal_filter(kafka_client.partner(CUT))) == []
    assert await describe_acls(admin, principal_filter(kafka_client.partner(KEPT))) != []
    with pytest.raises(KafkaCredentialMissing):
        kafka(settings, kafka_client.partner(CUT))


async def test_a_revoked_agency_cannot_write_inbound_any_more(
    settings: Settings, principals: None
) -> None:
    cut = kafka(settings, kafka_client.agency(AGENCY_CUT))
    kept = kafka(settings, kafka_client.agency(AGENCY_KEPT))
    producers = {
        name: AIOKafkaProducer(**conn.kwargs(), acks="all", request_timeout_ms=10000)
        for name, conn in (("cut", cut), ("kept", kept))
    }
    for p in producers.values():
        await p.start()
    try:
        for p in producers.values():  # both write inbound while provisioned
            await p.send_and_wait(settings.topic_inbound, b"{}", key=b"probe")

        await revoke(settings, kafka_client.agency(AGENCY_CUT))

        # The open producer's next write is refused (the ACL change reaches the broker a moment
        # after the controller accepts it: retried until then, never longer than 10 s).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        with pytest.raises(TopicAuthorizationFailedError):
            while loop.time() < deadline:
                await producers["cut"].send_and_wait(settings.topic_inbound, b"{}", key=b"probe")
                await asyncio.sleep(0.1)
        await producers["kept"].send_and_wait(settings.topic_inbound, b"{}", key=b"probe")
    finally:
        for p in producers.values():
            try:
                await p.stop()
            except KafkaError:
                pass
    with pytest.raises(SaslAuthenticationFailed):
        await authenticate(cut)
    await authenticate(kept)


async def test_rotation_gives_a_new_password_and_the_old_one_stops_authenticating(
    settings: Settings, principals: None
) -> None:
    old = kafka(settings, kafka_client.partner(ROTATED))
    await authenticate(old)
    await rotate(settings, kafka_client.partner(ROTATED))
    new = kafka(settings, kafka_client.partner(ROTATED))
    assert new.password != old.password
    await authenticate(new)
    with pytest.raises(SaslAuthenticationFailed):
        await authenticate(old)
    # Its grants are unchanged: it still reads its own topic with the new password.
    marker = f"rotated-{uuid.uuid4().hex}".encode()
    await put(settings, settings.partner_topic(ROTATED), marker)
    consumer = await reader(settings, new, settings.partner_topic(ROTATED))
    try:
        assert await read_until(consumer, marker, timeout_s=10)
    finally:
        await consumer.stop()


async def test_provisioning_sets_quotas_for_agencies_and_partners(
    settings: Settings, principals: None
) -> None:
    admin = kafka(settings, ADMIN)
    assert await describe_quotas(admin, kafka_client.partner(KEPT)) == {
        CONSUMER_BYTE_RATE: settings.kafka_partner_consumer_byte_rate,
        REQUEST_PERCENTAGE: settings.kafka_partner_request_percentage,
    }
    assert await describe_quotas(admin, kafka_client.agency(AGENCY_KEPT)) == {
        PRODUCER_BYTE_RATE: settings.kafka_agency_producer_byte_rate,
        REQUEST_PERCENTAGE: settings.kafka_agency_request_percentage,
    }
    # A principal never provisioned has none (so the lookup is not a constant).
    assert await describe_quotas(admin, f"partner.never-{RUN}") == {}


async def test_the_session_cleanup_deletes_acls_under_its_prefix_and_nothing_else(
    settings: Settings,
) -> None:
    """What conftest's ``settings`` fixture runs at the end of every session."""
    admin, who = kafka(settings, ADMIN), f"partner.cleanup-{RUN}"
    tag = f"cleanup-{RUN}"
    mine = [
        Binding(who, Resource.TOPIC, f"{tag}.inbound", Op.READ),
        Binding(who, Resource.TOPIC, f"{tag}.partner.", Op.READ, Pattern.PREFIXED),
        Binding(who, Resource.GROUP, f"{tag}-relay", Op.READ),
    ]
    # Names that merely start with the same letters, or hold the tag elsewhere: kept.
    others = [
        Binding(who, Resource.TOPIC, f"{tag}x.inbound", Op.READ),
        Binding(who, Resource.TOPIC, f"x{tag}.inbound", Op.READ),
    ]
    await create_acls(admin, mine + others)
    try:
        deleted = await delete_acls_under(admin, [f"{tag}.", f"{tag}-"])
        assert sorted(d[1] for d in deleted if d[1]) == sorted(b.name for b in mine)
        left = await describe_acls(admin, principal_filter(who))
        assert sorted(a[1] for a in left if a[1]) == sorted(b.name for b in others)
    finally:
        await delete_acls(admin, [principal_filter(who)])
