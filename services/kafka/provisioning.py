"""Kafka provisioning workflows: ``provision`` (credentials, ACLs and quotas of the fixed
principals and the given agencies and partners), ``revoke`` (cut a principal off) and
``rotate`` (a new password), through the admin calls of ``services/kafka/admin.py`` and the
table of ``services/kafka/acls.py``. Run as the super user (``accord kafka provision``;
``accord dev up`` for the fixed principals). Nothing here logs a password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError

from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.acls import bindings, quotas
from services.kafka.admin import (
    ProvisioningError,
    alter_quotas,
    create_acls,
    delete_acls,
    delete_scram_credentials,
    describe_acls,
    describe_quotas,
    principal_filter,
    set_scram_credentials,
)
from services.kafka.client import ADMIN, API, AUDIT, CHECKPOINTER, REFERRALS, RELAY, KafkaConn
from services.kafka.protocol import AclFilter
from services.settings import Settings

FIXED = [RELAY, API, AUDIT, CHECKPOINTER, REFERRALS]


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
    # Each partner's referral reply topic, which it alone writes (services/referrals/replies.py).
    await topics.ensure_topics(admin, topics.reply_topics(s, partners))
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
