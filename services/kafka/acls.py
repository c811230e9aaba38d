"""Kafka principals (SCRAM credentials) and their ACLs, through the broker's Admin API.

aiokafka 0.14's admin client has no ACL, SCRAM credential nor client quota calls, but its
protocol layer sends any request. aiokafka declares the structs of CreateAcls v1, DescribeAcls
v1, DeleteAcls v1 and DescribeClientQuotas v0 (its builders send one filter at a time, or no
null names, so ours are below); AlterUserScramCredentials v0 and AlterClientQuotas v0 are
declared here from Kafka's message specs (``AlterUserScramCredentialsRequest.json``,
``AlterClientQuotasRequest.json``).

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
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
    DescribeClientQuotasRequest_v0,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    Boolean,
    CompactArray,
    CompactBytes,
    CompactString,
    Float64,
    Int8,
    Int16,
    Int32,
    Schema,
    String,
    TaggedFields,
)

from services.kafka import client as kafka_client
from services.kafka.client import (
    ADMIN,
    API,
    AUDIT,
    CHECKPOINTER,
    FEED_GROUP_PREFIX,
    RELAY,
    KafkaConn,
)
from services.settings import Settings

SCRAM_SHA_512 = 2  # the mechanism's id in AlterUserScramCredentials
SCRAM_ITERATIONS = 8192
RESOURCE_NOT_FOUND = 91  # Kafka's error code (aiokafka has no class for it)


ANY = 1  # the "any" value of resource type, pattern type, operation and permission filters


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

    def __init__(self, upsertions: list[Upsertion], deletions: Iterable[str] = ()) -> None:
        self._upsertions = upsertions
        self._deletions: list[tuple[str, int, dict[int, bytes]]] = [
            (name, SCRAM_SHA_512, {}) for name in deletions
        ]

    def build(
        self, request_struct_class: type[AlterUserScramCredentialsRequest_v0]
    ) -> AlterUserScramCredentialsRequest_v0:
        return request_struct_class(self._deletions, self._upsertions, {})


class CreateAclsRequest(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    """Many bindings in one request (aiokafka's own builder sends one)."""

    API_KEY = 30

    def __init__(self, creations: list[tuple[int, str, int, str, str, int, int]]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


# A DeleteAcls or DescribeAcls filter: resource type, name (None: any), pattern type,
# principal (None: any), host (None: any), operation, permission type.
AclFilter: TypeAlias = tuple[int, str | None, int, str | None, str | None, int, int]


def principal_filter(principal: str) -> AclFilter:
    """Every ACL of ``principal``, on any resource."""
    return (ANY, None, ANY, f"User:{principal}", None, ANY, ANY)


class DeleteAclsRequest(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]
    """Many filters in one request (aiokafka's own builder sends one, without null names)."""

    API_KEY = 31

    def __init__(self, filters: list[AclFilter]) -> None:
        self._filters = filters

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self._filters)


class DescribeAclsRequest(Request[DescribeAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 29

    def __init__(self, f: AclFilter) -> None:
        self._filter = f

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(*self._filter)


# Client quotas, per user (principal): Kafka's quota names, values in bytes/s or percent.
QuotaEntity: TypeAlias = list[tuple[str, str | None]]  # [("user", principal)]
QuotaOp: TypeAlias = tuple[str, float, bool]  # (key, value, remove)


class AlterClientQuotasResponse_v0(Response):  # type: ignore[misc]
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "entries",
            Array(
                ("error_code", Int16),
                ("error_message", String("utf-8")),
                (
                    "entity",
                    Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8"))),
                ),
            ),
        ),
    )


class AlterClientQuotasRequest_v0(RequestStruct):  # type: ignore[misc]
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = AlterClientQuotasResponse_v0
    SCHEMA = Schema(
        (
            "entries",
            Array(
                (
                    "entity",
                    Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8"))),
                ),
                ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))),
            ),
        ),
        ("validate_only", Boolean),
    )


class AlterClientQuotasRequest(Request[AlterClientQuotasRequest_v0]):  # type: ignore[misc]
    API_KEY = 49

    def __init__(self, entries: list[tuple[QuotaEntity, list[QuotaOp]]]) -> None:
        self._entries = entries

    def build(
        self, request_struct_class: type[AlterClientQuotasRequest_v0]
    ) -> AlterClientQuotasRequest_v0:
        return request_struct_class(self._entries, False)


class DescribeClientQuotasRequest(Request[DescribeClientQuotasRequest_v0]):  # type: ignore[misc]
    API_KEY = 48
    EXACT = 0

    def __init__(self, user: str) -> None:
        self._user = user

    def build(
        self, request_struct_class: type[DescribeClientQuotasRequest_v0]
    ) -> DescribeClientQuotasRequest_v0:
        return request_struct_class([("user", self.EXACT, self._user)], True)


class ProvisioningError(RuntimeError):
    """The broker refused a credential or an ACL; the message names which, never a secret."""


def _upsertion(name: str, password: str) -> Upsertion:
    # SCRAM stores only Hi(password, salt, i) = PBKDF2; the password never reaches the broker.
    salt = secrets.token_bytes(32)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
    return (name, SCRAM_SHA_512, SCRAM_ITERATIONS, salt, salted, {})


async def _send(conn: KafkaConn, request: Request[Any]) -> Any:
    """One request to the cluster through an admin client of its own (aiokafka's admin client
    has no call for these requests, only its protocol layer)."""
    admin = AIOKafkaAdminClient(**conn.kwargs())
    await admin.start()
    try:
        return await admin._send_request(request)
    finally:
        await admin.close()


async def set_scram_credentials(conn: KafkaConn, credentials: dict[str, str]) -> None:
    """Create or replace each principal's SCRAM-SHA-512 credential."""
    if not credentials:
        return
    request = AlterUserScramCredentialsRequest(
        [_upsertion(n, p) for n, p in sorted(credentials.items())]
    )
    response = await _send(conn, request)
    for user, code, _message, _tags in response.results:
        if code:
            raise ProvisioningError(f"SCRAM credential of {user}: {for_code(code).__name__}")


async def create_acls(conn: KafkaConn, bindings: Iterable[Binding]) -> None:
    """Create each ACL (allow, any host); creating one that exists is a no-op for Kafka."""
    wanted = sorted(set(bindings), key=lambda b: (b.principal, b.resource, b.name, b.op))
    if not wanted:
        return
    creations = [
        (int(b.resource), b.name, int(b.pattern), f"User:{b.principal}", "*", int(b.op), ALLOW)
        for b in wanted
    ]
    response = await _send(conn, CreateAclsRequest(creations))
    for b, (code, _message) in zip(wanted, response.creation_responses, strict=True):
        if code:
            raise ProvisioningError(
                f"ACL {b.op.name} on {b.resource.name} {b.name} for {b.principal}: "
                f"{for_code(code).__name__}"
            )


async def delete_acls(conn: KafkaConn, filters: list[AclFilter]) -> list[AclFilter]:
    """Delete every ACL matching any of ``filters``, in one request; returns those deleted
    (as exact filters). Kafka checks ACLs on every request: a client already connected as a
    principal whose ACLs are gone is refused at its next request."""
    if not filters:
        return []
    response = await _send(conn, DeleteAclsRequest(filters))
    deleted: list[AclFilter] = []
    for code, _message, matching in response.filter_responses:
        if code:
            raise ProvisioningError(f"deleting ACLs: {for_code(code).__name__}")
        for m_code, _m_message, rtype, name, pattern, principal, host, op, perm in matching:
            if m_code:
                raise ProvisioningError(
                    f"deleting an ACL on {name} for {principal}: {for_code(m_code).__name__}"
                )
            deleted.append((rtype, name, pattern, principal, host, op, perm))
    return deleted


async def describe_acls(conn: KafkaConn, f: AclFilter) -> list[AclFilter]:
    """The ACLs matching ``f``, each as an exact filter (for ``delete_acls``)."""
    response = await _send(conn, DescribeAclsRequest(f))
    if response.error_code:
        raise ProvisioningError(f"describing ACLs: {for_code(response.error_code).__name__}")
    return [
        (rtype, name, pattern, principal, host, op, perm)
        for rtype, name, pattern, acls in response.resources
        for principal, host, op, perm in acls
    ]


ANY_ACL: AclFilter = (ANY, None, ANY, None, None, ANY, ANY)


def acls_under(acls: Iterable[AclFilter], prefixes: Iterable[str]) -> list[AclFilter]:
    """The ACLs on resources whose name starts with one of ``prefixes`` (none empty)."""
    wanted = tuple(prefixes)
    if not wanted or not all(wanted):
        raise ValueError("an empty prefix would match every ACL")
    return [a for a in acls if a[1] is not None and a[1].startswith(wanted)]


async def delete_acls_under(conn: KafkaConn, prefixes: Iterable[str]) -> list[AclFilter]:
    """Delete the ACLs on resources named under ``prefixes`` (a test session's own topics and
    groups), each by an exact filter: an ACL on any other name is never matched."""
    return await delete_acls(conn, acls_under(await describe_acls(conn, ANY_ACL), prefixes))


async def delete_scram_credentials(conn: KafkaConn, principals: Iterable[str]) -> None:
    """Delete each principal's SCRAM-SHA-512 credential: no new connection authenticates as
    it (connections already open stay so until they close: revoke deletes the ACLs first).
    A principal without a credential is not an error (a revocation may be repeated)."""
    names = sorted(set(principals))
    if not names:
        return
    response = await _send(conn, AlterUserScramCredentialsRequest([], deletions=names))
    for user, code, _message, _tags in response.results:
        if code and code != RESOURCE_NOT_FOUND:
            raise ProvisioningError(
                f"deleting SCRAM credential of {user}: {for_code(code).__name__}"
            )


async def alter_quotas(conn: KafkaConn, quotas: dict[str, dict[str, float | None]]) -> None:
    """Set each principal's client quotas, ``{principal: {quota name: value}}``; a value of
    None removes that quota."""
    entries: list[tuple[QuotaEntity, list[QuotaOp]]] = [
        (
            [("user", principal)],
            [(k, 0.0 if v is None else float(v), v is None) for k, v in sorted(values.items())],
        )
        for principal, values in sorted(quotas.items())
        if values
    ]
    if not entries:
        return
    response = await _send(conn, AlterClientQuotasRequest(entries))
    for code, _message, entity in response.entries:
        if code:
            raise ProvisioningError(f"quotas of {entity}: {for_code(code).__name__}")


async def describe_quotas(conn: KafkaConn, principal: str) -> dict[str, float]:
    """The client quotas set for ``principal`` itself (not defaults)."""
    response = await _send(conn, DescribeClientQuotasRequest(principal))
    if response.error_code:
        raise ProvisioningError(f"describing quotas: {for_code(response.error_code).__name__}")
    return {name: value for _entity, values in response.entries for name, value in values}


PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"


def quotas(
    s: Settings, *, agencies: Iterable[str], partners: Iterable[str]
) -> dict[str, dict[str, float | None]]:
    """The quotas of agency and partner principals (a setting of 0: none, removed): an agency
    cannot flood inbound, a partner cannot starve the broker by re-reading its topic."""

    def value(v: float) -> float | None:
        return float(v) if v > 0 else None

    out: dict[str, dict[str, float | None]] = {}
    for a in agencies:
        out[kafka_client.agency(a)] = {
            PRODUCER_BYTE_RATE: value(s.kafka_agency_producer_byte_rate),
            REQUEST_PERCENTAGE: value(s.kafka_agency_request_percentage),
        }
    for p in partners:
        out[kafka_client.partner(p)] = {
            CONSUMER_BYTE_RATE: value(s.kafka_partner_consumer_byte_rate),
            REQUEST_PERCENTAGE: value(s.kafka_partner_request_percentage),
        }
    return out


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
        # registering a partner creates its topic; the HTTP feed reads partner topics with
        # one group per partner; a revocation writes the unsealed `consent.revoked` notices
        # (no personal data) to the topics of earlier recipients (services/consent/notices.py):
        # the one writer of partner topics besides the relay, and it cannot seal (no relay
        # key). Before that it waits until the audit sink has stored every decision so far:
        # it may describe the decision topic and the sink's group (offsets), not read them.
        *_topic(API, s.topic_inbound, Op.WRITE),
        *_topic(API, s.topic_consents, Op.WRITE),
        Binding(API, Resource.TOPIC, s.topic_decisions, Op.DESCRIBE),
        Binding(API, Resource.GROUP, f"{s.relay_group}-audit", Op.DESCRIBE),
        *_topic(API, s.partner_topic_prefix, Op.READ, Op.WRITE, Op.CREATE, pattern=prefix),
        *_group(API, FEED_GROUP_PREFIX, prefix),
        Binding(API, Resource.CLUSTER, CLUSTER, Op.IDEMPOTENT_WRITE),
        # The sink worker (`accord sink`): the decision records (the audit sink; its groups by
        # prefix, so a second sink can re-read the topic from the start under a group of its
        # own) and the dead letters (the rejection sink), nothing else.
        *_topic(AUDIT, s.topic_decisions, Op.READ),
        *_group(AUDIT, f"{s.relay_group}-audit", prefix),
        *_topic(AUDIT, s.topic_deadletter, Op.READ),
        *_group(AUDIT, f"{s.relay_group}-rejections"),
        # Witnessed audit checkpoints (services/audit/witness.py): the checkpointer alone
        # writes them, in transactions of its one transactional id (a second instance fences
        # the first); the API and `accord audit verify` (as the audit principal) read them,
        # without a group. No one else may write: the database's users cannot rewrite them.
        *_topic(CHECKPOINTER, s.topic_audit_checkpoints, Op.READ, Op.WRITE, Op.CREATE),
        Binding(
            CHECKPOINTER,
            Resource.TRANSACTIONAL_ID,
            s.audit_checkpointer_transactional_id,
            Op.WRITE,
        ),
        Binding(
            CHECKPOINTER,
            Resource.TRANSACTIONAL_ID,
            s.audit_checkpointer_transactional_id,
            Op.DESCRIBE,
        ),
        Binding(CHECKPOINTER, Resource.CLUSTER, CLUSTER, Op.IDEMPOTENT_WRITE),
        *_topic(API, s.topic_audit_checkpoints, Op.READ),
        *_topic(AUDIT, s.topic_audit_checkpoints, Op.READ),
    ]
    for a in agencies:
        grants += _topic(kafka_client.agency(a), s.topic_inbound, Op.WRITE)
    for p in partners:
        principal = kafka_client.partner(p)
        grants += _topic(principal, s.partner_topic(p), Op.READ)
        grants += _group(principal, partner_group_prefix(s, p), prefix)
    return grants


FIXED = [RELAY, API, AUDIT, CHECKPOINTER]


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
    await alter_quotas(admin, quotas(s, agencies=agencies, partners=partners))
    await set_scram_credentials(admin, {p: creds[p] for p in principals})
    await _until_authenticated(s, principals, timeout_s=15.0)
    return principals


async def revoke(s: Settings, principal: str, *, timeout_s: float = 15.0) -> list[AclFilter]:
    """Cut ``principal`` off: its ACLs first (Kafka checks them on every request, so a client
    still connected is refused at its next one), then its SCRAM credential (no new
    connection), then its quotas and its password in the credentials file (a later
    ``provision`` issues a new one). Returns the ACLs deleted, once the broker enforces the
    deletions (they reach it a moment after the controller accepts them; the credential's is
    checked when the credentials file holds the password). The fixed
    principals and the super user are not revoked this way."""
    if principal in (*FIXED, ADMIN):
        raise ProvisioningError(f"{principal} is a fixed principal: not revoked by this command")
    admin = kafka_client.kafka(s, ADMIN)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    deleted = await delete_acls(admin, [principal_filter(principal)])
    # The broker answers DescribeAcls from the ACLs it enforces: once empty there, in force.
    while await describe_acls(admin, principal_filter(principal)):
        if loop.time() > deadline:
            raise ProvisioningError(f"the broker still holds ACLs of {principal}")
        await asyncio.sleep(0.05)
    old_password = kafka_client.load_credentials(s).get(principal)
    await delete_scram_credentials(admin, [principal])
    if old_password is not None:
        await _until_refused(
            replace(kafka_client.kafka(s, ADMIN), principal=principal, password=old_password),
            deadline=deadline,
        )
    held = await describe_quotas(admin, principal)
    await alter_quotas(admin, {principal: dict.fromkeys(held)})
    kafka_client.forget_password(s, principal)
    return deleted


async def _authenticates(conn: KafkaConn) -> bool:
    """Whether ``conn``'s principal passes a SASL handshake with the (first) bootstrap broker.

    One bare connection, not a client: AIOKafkaClient logs every refused attempt at ERROR,
    and these probes expect refusals (a credential not yet applied, or one just deleted)."""
    host, _, port = conn.bootstrap.split(",")[0].strip().rpartition(":")
    kwargs = conn.kwargs()
    del kwargs["bootstrap_servers"]
    try:
        probe = await create_conn(host, int(port), request_timeout_ms=5000, **kwargs)
    except (KafkaError, OSError, TimeoutError):
        return False
    probe.close()
    return True


async def _until_refused(conn: KafkaConn, *, deadline: float) -> None:
    """Wait until ``conn`` no longer authenticates (its credential deleted or replaced)."""
    loop = asyncio.get_running_loop()
    while True:
        if not await _authenticates(conn):
            return
        if loop.time() > deadline:
            raise ProvisioningError(f"{conn.principal} still authenticates")
        await asyncio.sleep(0.1)


async def rotate(s: Settings, principal: str) -> None:
    """A new password for ``principal``, written to the credentials file; the old one stops
    authenticating new connections once the broker applies the change (connections already
    open stay authenticated: revoke to cut those). Returns once the new one authenticates."""
    if principal not in kafka_client.load_credentials(s):
        raise ProvisioningError(f"{principal} has no credential to rotate: provision it first")
    password = kafka_client.new_password()
    await set_scram_credentials(kafka_client.kafka(s, ADMIN), {principal: password})
    kafka_client.store_password(s, principal, password)
    await _until_authenticated(s, [principal], timeout_s=15.0)


async def _until_authenticated(s: Settings, principals: Iterable[str], *, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for principal in principals:
        conn = kafka_client.kafka(s, principal)
        while not await _authenticates(conn):
            if loop.time() > deadline:
                raise ProvisioningError(f"{principal} does not authenticate yet")
            await asyncio.sleep(0.1)
