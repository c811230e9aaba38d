"""Kafka principals (SCRAM credentials) and their ACLs, through the broker's Admin API.

aiokafka 0.14's admin client has no ``create_acls`` nor SCRAM credential calls, but its
protocol layer sends any request; the two used here are declared below from Kafka's message
specs (``CreateAclsRequest.json`` v1, ``AlterUserScramCredentialsRequest.json`` v0).

What each principal may do is one table, ``bindings``: least privilege, derived from the
settings' topic and group names, so a deployment (or a test session) with its own names gets
its own grants. Run as the super user (``accord kafka provision``; ``accord dev up`` for the
fixed principals). Nothing here logs a password.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import CreateAclsRequest_v1
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from services import kafka_client
from services.kafka_client import ADMIN, API, AUDIT, FEED_GROUP_PREFIX, RELAY, KafkaConn
from services.settings import Settings

SCRAM_SHA_512 = 2  # the mechanism's id in AlterUserScramCredentials
SCRAM_ITERATIONS = 8192


class Resource(enum.IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Pattern(enum.IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Op(enum.IntEnum):
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    IDEMPOTENT_WRITE = 12


ALLOW = 3
CLUSTER = "kafka-cluster"


@dataclass(frozen=True)
class Binding:
    principal: str
    resource: Resource
    name: str
    op: Op
    pattern: Pattern = Pattern.LITERAL


class AlterUserScramCredentialsResponse_v0(Response):  # type: ignore[misc]
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


Upsertion: TypeAlias = tuple[str, int, int, bytes, bytes, dict[int, bytes]]


class AlterUserScramCredentialsRequest(Request[AlterUserScramCredentialsRequest_v0]):  # type: ignore[misc]
    API_KEY = 51

    def __init__(self, upsertions: list[Upsertion]) -> None:
        self._upsertions = upsertions

    def build(
        self, request_struct_class: type[AlterUserScramCredentialsRequest_v0]
    ) -> AlterUserScramCredentialsRequest_v0:
        return request_struct_class([], self._upsertions, {})


class CreateAclsRequest(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    """Many bindings in one request (aiokafka's own builder sends one)."""

    API_KEY = 30

    def __init__(self, creations: list[tuple[int, str, int, str, str, int, int]]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


class ProvisioningError(RuntimeError):
    """The broker refused a credential or an ACL; the message names which, never a secret."""


def _upsertion(name: str, password: str) -> Upsertion:
    # SCRAM stores only Hi(password, salt, i) = PBKDF2; the password never reaches the broker.
    salt = secrets.token_bytes(32)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
    return (name, SCRAM_SHA_512, SCRAM_ITERATIONS, salt, salted, {})


async def _send(admin: AIOKafkaAdminClient, request: Request[Any]) -> Any:
    return await admin._send_request(request)


async def set_scram_credentials(conn: KafkaConn, credentials: dict[str, str]) -> None:
    """Create or replace each principal's SCRAM-SHA-512 credential."""
    if not credentials:
        return
    admin = AIOKafkaAdminClient(**conn.kwargs())
    await admin.start()
    try:
        request = AlterUserScramCredentialsRequest(
            [_upsertion(n, p) for n, p in sorted(credentials.items())]
        )
        response = await _send(admin, request)
        for user, code, _message, _tags in response.results:
            if code:
                raise ProvisioningError(f"SCRAM credential of {user}: {for_code(code).__name__}")
    finally:
        await admin.close()


async def create_acls(conn: KafkaConn, bindings: Iterable[Binding]) -> None:
    """Create each ACL (allow, any host); creating one that exists is a no-op for Kafka."""
    wanted = sorted(set(bindings), key=lambda b: (b.principal, b.resource, b.name, b.op))
    if not wanted:
        return
    admin = AIOKafkaAdminClient(**conn.kwargs())
    await admin.start()
    try:
        creations = [
            (int(b.resource), b.name, int(b.pattern), f"User:{b.principal}", "*", int(b.op), ALLOW)
            for b in wanted
        ]
        response = await _send(admin, CreateAclsRequest(creations))
        for b, (code, _message) in zip(wanted, response.creation_responses, strict=True):
            if code:
                raise ProvisioningError(
                    f"ACL {b.op.name} on {b.resource.name} {b.name} for {b.principal}: "
                    f"{for_code(code).__name__}"
                )
    finally:
        await admin.close()


def _topic(
    principal: str, name: str, *ops: Op, pattern: Pattern = Pattern.LITERAL
) -> list[Binding]:
    # DESCRIBE comes with every other topic operation in Kafka; granted for clarity.
    return [Binding(principal, Resource.TOPIC, name, op, pattern) for op in (*ops, Op.DESCRIBE)]


def _group(principal: str, name: str, pattern: Pattern = Pattern.LITERAL) -> list[Binding]:
    return [
        Binding(principal, Resource.GROUP, name, Op.READ, pattern),
        Binding(principal, Resource.GROUP, name, Op.DESCRIBE, pattern),
    ]


def partner_group_prefix(s: Settings, partner_id: str) -> str:
    """A partner's consumer groups are named ``<its topic>.<anything>``, and only its own."""
    return f"{s.partner_topic(partner_id)}."


def bindings(s: Settings, *, agencies: Iterable[str], partners: Iterable[str]) -> list[Binding]:
    """Every grant, by principal. The super user (``ADMIN``) needs none."""
    core = (s.topic_inbound, s.topic_decisions, s.topic_deadletter, s.topic_consents, s.topic_seen)
    prefix = Pattern.PREFIXED
    grants: list[Binding] = [
        # The relay: reads inbound (its group), the consent snapshots and its replay guard;
        # writes deliveries, decision records, dead letters and the replay guard, in
        # transactions of its own transactional ids; creates the topics it needs.
        *_topic(RELAY, s.topic_inbound, Op.READ),
        *_topic(RELAY, s.topic_consents, Op.READ),
        *_topic(RELAY, s.topic_seen, Op.READ, Op.WRITE),
        *_topic(RELAY, s.topic_decisions, Op.WRITE),
        *_topic(RELAY, s.topic_deadletter, Op.WRITE),
        *_topic(RELAY, s.partner_topic_prefix, Op.WRITE, Op.CREATE, pattern=prefix),
        *[b for t in core for b in _topic(RELAY, t, Op.CREATE)],
        *_group(RELAY, s.relay_group),
        Binding(RELAY, Resource.TRANSACTIONAL_ID, s.relay_transactional_id, Op.WRITE, prefix),
        Binding(RELAY, Resource.TRANSACTIONAL_ID, s.relay_transactional_id, Op.DESCRIBE, prefix),
        Binding(RELAY, Resource.CLUSTER, CLUSTER, Op.IDEMPOTENT_WRITE),
        # The API: HTTP ingest writes inbound; the consent publisher writes snapshots;
        # the rejections listing reads dead letters; registering a partner creates its
        # topic; the HTTP feed reads partner topics with one group per partner; a
        # revocation writes the unsealed `consent.revoked` notices (no personal data) to the
        # topics of earlier recipients (services/consent/notices.py): the one writer of
        # partner topics besides the relay, and it cannot seal (no relay key).
        *_topic(API, s.topic_inbound, Op.WRITE),
        *_topic(API, s.topic_consents, Op.WRITE),
        *_topic(API, s.topic_deadletter, Op.READ),
        *_group(API, f"{s.relay_group}-rejections"),
        *_topic(API, s.partner_topic_prefix, Op.READ, Op.WRITE, Op.CREATE, pattern=prefix),
        *_group(API, FEED_GROUP_PREFIX, prefix),
        Binding(API, Resource.CLUSTER, CLUSTER, Op.IDEMPOTENT_WRITE),
        # The audit sink: the decision records, nothing else; its groups by prefix, so a
        # second sink can re-read the topic from the start under a group of its own.
        *_topic(AUDIT, s.topic_decisions, Op.READ),
        *_group(AUDIT, f"{s.relay_group}-audit", prefix),
    ]
    for a in agencies:
        grants += _topic(kafka_client.agency(a), s.topic_inbound, Op.WRITE)
    for p in partners:
        principal = kafka_client.partner(p)
        grants += _topic(principal, s.partner_topic(p), Op.READ)
        grants += _group(principal, partner_group_prefix(s, p), prefix)
    return grants


FIXED = [RELAY, API, AUDIT]


async def provision(
    s: Settings, *, agencies: Iterable[str] = (), partners: Iterable[str] = ()
) -> list[str]:
    """Credentials (generated into the credentials file if missing: development) and ACLs for
    the fixed principals and the given agencies and partners. Idempotent. Returns the
    principals provisioned."""
    agencies, partners = sorted(set(agencies)), sorted(set(partners))
    principals = [
        *FIXED,
        *(kafka_client.agency(a) for a in agencies),
        *(kafka_client.partner(p) for p in partners),
    ]
    creds = kafka_client.ensure_passwords(s, principals)
    admin = kafka_client.kafka(s, ADMIN)
    # ACLs first, credentials last: the broker applies KRaft metadata in log order, so once a
    # principal can authenticate, its ACLs are in force too. Both reach the broker a moment
    # after the controller accepts them; a client connecting at once was refused (CI saw it).
    await create_acls(admin, bindings(s, agencies=agencies, partners=partners))
    await set_scram_credentials(admin, {p: creds[p] for p in principals})
    await _until_authenticated(s, principals, timeout_s=15.0)
    return principals


async def _until_authenticated(s: Settings, principals: Iterable[str], *, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for principal in principals:
        while True:
            client = AIOKafkaClient(**kafka_client.kafka(s, principal).kwargs())
            try:
                await client.bootstrap()
                break
            except KafkaError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
            finally:
                await client.close()
