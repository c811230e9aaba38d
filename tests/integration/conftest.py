"""Fixtures on the real local stack: Kafka, OPA and PostgreSQL as `accord dev up` starts them.

Each test session gets its own topics, consumer group, transactional id and a freshly
migrated test database, so runs never see each other's records.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.orm import Session, sessionmaker

from services import devstack
from services.audit.checkpoints import Checkpointer
from services.db import make_engine, make_sessionmaker
from services.devstack import postgres
from services.kafka import topics
from services.kafka.admin import delete_acls_under
from services.kafka.client import ADMIN, kafka
from services.runtime import running_api, running_checkpointer, running_relay, running_sinks
from services.settings import Settings
from services.sink_worker import SinkWorker
from tests.support.keys import AUDIT_KEY, RELAY_KEY
from tests.support.registry import REGISTRY
from tests.support.stack import audit_key_file, free_port, fresh_database, kafka_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    base = Settings()
    devstack.up(base)  # idempotent; `make test` has already started the stack
    base = Settings()  # re-read the addresses `up` wrote
    run = f"it-{uuid.uuid4().hex[:8]}"
    # Sessions running side by side each need a database of their own: ACCORD_TEST_DATABASE.
    test_db = os.environ.get("ACCORD_TEST_DATABASE", "accord_test")
    postgres.ensure_database(base, test_db)
    yield base.model_copy(
        update={
            "topic_inbound": f"{run}.inbound",
            "topic_decisions": f"{run}.decisions",
            "topic_deadletter": f"{run}.deadletter",
            "topic_consents": f"{run}.consents",
            "partner_topic_prefix": f"{run}.partner.",
            "topic_referrals": f"{run}.referrals",
            "referral_reply_topic_prefix": f"{run}.replies.",
            "relay_group": f"{run}-relay",
            "relay_transactional_id": f"{run}-relay-0",
            "database_url": postgres.url(base, test_db),
            "api_port": free_port(),
            "topic_seen": f"{run}.seen",
            "relay_private_key": base64.b64encode(bytes(RELAY_KEY)).decode(),
            # The checkpointer's key in a file of its own (0400); the others get the verify
            # key only. Entries are signed with the stack's appender key (<state_dir>/keys).
            "audit_signing_key_file": str(audit_key_file(base, run)),
            "audit_verify_key": bytes(AUDIT_KEY.verify_key).hex(),
            "topic_audit_checkpoints": f"{run}.audit.checkpoints",
            "audit_checkpointer_transactional_id": f"{run}-checkpointer",
            "audit_witness_file": str(base.state_dir / "test-artifacts" / f"{run}-witness.jsonl"),
            # Tests make hundreds of enrollments and deliberate 401s from one IP; the rate
            # limits themselves are tested on an API of their own (test_http_security.py).
            "auth_failures_per_minute": 1_000_000,
            "enroll_per_minute": 1_000_000,
        }
    )
    # Last of all (this fixture is set up first): the ACLs the session granted on its own
    # topics and groups, so the dev broker does not collect them run after run. Only names
    # under this run's tag; the principals' credentials are shared by every run and stay.
    loop = asyncio.new_event_loop()  # not asyncio.run: that would unset pytest-asyncio's loop
    try:
        loop.run_until_complete(delete_acls_under(kafka(base, ADMIN), [f"{run}.", f"{run}-"]))
    finally:
        loop.close()
    audit_key_file(base, run).unlink()


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[str]:
    url = settings.sqlalchemy_url
    fresh_database(url)
    yield url


@pytest.fixture(scope="session")
def sessions(database: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the tests' database, for tests that set up rows or read them back."""
    engine = make_engine(database)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture(scope="session")
async def kafka_topics(settings: Settings) -> list[str]:
    await kafka_ready(settings)
    ids = [p.id for p in REGISTRY.partners]
    await topics.ensure_topics(kafka(settings, ADMIN), topics.partner_topics(settings, ids))
    return ids


@pytest.fixture(scope="session")
async def producer(settings: Settings, kafka_topics: list[str]) -> AsyncIterator[AIOKafkaProducer]:
    """The test harness's producer, as the operator: it writes agencies' events and consent
    snapshots alike (test_kafka_security.py shows what the agencies' own principals may not)."""
    p = AIOKafkaProducer(**kafka(settings, ADMIN).kwargs(), acks="all")
    await p.start()
    yield p
    await p.stop()


@pytest.fixture(scope="session")
async def relay(settings: Settings, database: str, kafka_topics: list[str]) -> AsyncIterator[None]:
    """One relay for the session's topics, shared by every test module."""
    async with running_relay(settings):
        yield


@pytest.fixture(scope="session")
async def sinks(
    settings: Settings, database: str, kafka_topics: list[str]
) -> AsyncIterator[SinkWorker]:
    """The sink worker (audit chain, rejections) for the session, the code `accord sink` runs;
    ``await sinks.catch_up()`` waits until both topics, as they stand, are stored."""
    async with running_sinks(settings) as worker:
        yield worker


@pytest.fixture(scope="session")
async def checkpointer(
    settings: Settings, database: str, kafka_topics: list[str]
) -> AsyncIterator[Checkpointer]:
    """The audit checkpointer worker (it ran inside the API before): tests tick it."""
    async with running_checkpointer(settings) as worker:
        yield worker


@pytest.fixture(scope="session")
async def api(
    settings: Settings,
    database: str,
    kafka_topics: list[str],
    relay: None,
    sinks: SinkWorker,
    checkpointer: Checkpointer,
) -> AsyncIterator[str]:
    async with running_api(settings) as base:
        yield base
