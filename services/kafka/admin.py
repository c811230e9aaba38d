"""The admin calls aiokafka's admin client lacks: SCRAM credentials, ACLs and client quotas,
each one request (``services/kafka/protocol.py``) through an admin connection of its own. Run
as the super user. Nothing here logs a password.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request

from services.kafka.client import KafkaConn
from services.kafka.protocol import (
    ALLOW,
    ANY,
    RESOURCE_NOT_FOUND,
    SCRAM_SHA_512,
    AclFilter,
    AlterClientQuotasRequest,
    AlterUserScramCredentialsRequest,
    CreateAclsRequest,
    DeleteAclsRequest,
    DescribeAclsRequest,
    DescribeClientQuotasRequest,
    Op,
    Pattern,
    QuotaEntity,
    QuotaOp,
    Resource,
    Upsertion,
)

SCRAM_ITERATIONS = 8192


@dataclass(frozen=True)
class Binding:
    """One ACL: ``principal`` is allowed ``op`` on a resource, from any host."""

    principal: str
    resource: Resource
    name: str
    op: Op
    pattern: Pattern = Pattern.LITERAL


class ProvisioningError(RuntimeError):
    """The broker refused a credential or an ACL; the message names which, never a secret."""


def upsertion(name: str, password: str) -> Upsertion:
    # SCRAM stores only Hi(password, salt, i) = PBKDF2; the password never reaches the broker.
    salt = secrets.token_bytes(32)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
    return (name, SCRAM_SHA_512, SCRAM_ITERATIONS, salt, salted, {})


async def send(conn: KafkaConn, request: Request[Any]) -> Any:
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
        [upsertion(n, p) for n, p in sorted(credentials.items())]
    )
    response = await send(conn, request)
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
    response = await send(conn, CreateAclsRequest(creations))
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
    response = await send(conn, DeleteAclsRequest(filters))
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
    response = await send(conn, DescribeAclsRequest(f))
    if response.error_code:
        raise ProvisioningError(f"describing ACLs: {for_code(response.error_code).__name__}")
    return [
        (rtype, name, pattern, principal, host, op, perm)
        for rtype, name, pattern, acls in response.resources
        for principal, host, op, perm in acls
    ]


def principal_filter(principal: str) -> AclFilter:
    """Every ACL of ``principal``, on any resource."""
    return (ANY, None, ANY, f"User:{principal}", None, ANY, ANY)


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
    response = await send(conn, AlterUserScramCredentialsRequest([], deletions=names))
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
    response = await send(conn, AlterClientQuotasRequest(entries))
    for code, _message, entity in response.entries:
        if code:
            raise ProvisioningError(f"quotas of {entity}: {for_code(code).__name__}")


async def describe_quotas(conn: KafkaConn, principal: str) -> dict[str, float]:
    """The client quotas set for ``principal`` itself (not defaults)."""
    response = await send(conn, DescribeClientQuotasRequest(principal))
    if response.error_code:
        raise ProvisioningError(f"describing quotas: {for_code(response.error_code).__name__}")
    return {name: value for _entity, values in response.entries for name, value in values}
