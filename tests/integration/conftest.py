"""Fixtures on the real local stack: Kafka, OPA and PostgreSQL as `accord dev up` starts them.

Each test session gets its own topics, consumer group, transactional id and a freshly
migrated test database, so runs never see each other's records.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from sqlalchemy.orm import Session, sessionmaker

from services import devstack, kafka_client, migrations
from services.audit.checkpoints import Checkpointer
from services.broker import provenance, topics
from services.broker.partner import collect, tail
from services.broker.pipeline import seal
from services.broker.survivor_keys import EventSealer
from services.db import make_engine, make_sessionmaker, transaction
from services.devstack import opa, postgres
from services.kafka_acl import delete_acls_under, provision
from services.kafka_client import ADMIN, AUDIT, kafka
from services.registry.schemas import RegistryIn
from services.registry.service import load_registry
from services.runtime import running_api, running_checkpointer, running_relay, running_sinks
from services.settings import Settings
from services.sink_worker import SinkWorker
from services.vocabulary import Category

pytestmark = pytest.mark.integration

MOU = {"valid_from": "2026-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}
TRAINED = "2030-01-01T00:00:00Z"
EVENT_TYPES = ["accord.referral.made", "accord.case.identified"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def partner(
    pid: str,
    ptype: str,
    purpose: str,
    categories: list[str],
    *,
    event_types: list[str] = EVENT_TYPES,
    jurisdiction: str = "state-a",
    mou: dict[str, str] = MOU,
) -> dict[str, Any]:
    agreement = {"id": f"mou-{pid}", "purposes": [purpose], "categories": categories, **mou}
    return {
        "id": pid,
        "name": pid,
        "type": ptype,
        "jurisdiction": jurisdiction,
        "vetted": True,
        "training_attested_until": TRAINED,
        "agreements": [agreement],
        "subscriptions": [{"id": f"sub-{pid}", "purpose": purpose, "event_types": event_types}],
    }


# Partners of the rule-by-rule tests (test_rules_end_to_end.py): they subscribe to other event
# types than the partners above, and their agreements cover every category, so that each
# test isolates the rule it is about.
RULE_TYPES = [
    "accord.screening.completed",
    "accord.safety.concern_raised",
    "accord.service_need.recorded",
]
ALL_CATEGORIES = [c.value for c in Category if c is not Category.SHELTER_LOCATION]
LAPSED = {"valid_from": "2025-01-01T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z"}
RULE_ROWS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("rules-vs", "victim_services", "care_coordination", {}),
    ("rules-bh", "behavioral_health", "care_coordination", {}),
    ("rules-housing", "housing", "service_referral", {}),
    ("rules-police-a", "law_enforcement", "investigation", {}),
    ("rules-police-b", "law_enforcement", "investigation", {"jurisdiction": "state-b"}),
    ("rules-cps-a", "child_welfare", "mandated_report", {}),
    ("rules-cps-b", "child_welfare", "mandated_report", {"jurisdiction": "state-b"}),
    ("rules-ems", "emergency_services", "emergency_response", {}),
    ("rules-lapsed", "legal_aid", "care_coordination", {"mou": LAPSED}),
]
RULE_PARTNERS = [
    partner(pid, ptype, purpose, ALL_CATEGORIES, event_types=RULE_TYPES, **extra)
    for pid, ptype, purpose, extra in RULE_ROWS
]


# Keys made for this test session: agencies sign what they publish, partners open deliveries.
AGENCY_KEYS = {a: SigningKey.generate() for a in ("harbor-outreach", "valley-school")}
RELAY_KEY = PrivateKey.generate()
AUDIT_KEY = SigningKey.generate()  # signs the audit chain's checkpoints (the checkpointer's)
PARTNER_KEYS: dict[str, PrivateKey] = defaultdict(PrivateKey.generate)


def with_keys(registry: dict[str, Any]) -> dict[str, Any]:
    for agency in registry["agencies"]:
        agency["public_key"] = provenance.public_key_of(AGENCY_KEYS[agency["id"]])
    for p in registry["partners"]:
        p["public_key"] = seal.public_key_of(PARTNER_KEYS[p["id"]])
    return registry


def sign(event: dict[str, Any]) -> dict[str, Any]:
    """Sign as the agency the event claims to come from."""
    agency = event["source"].removeprefix("/agencies/")
    return provenance.sign_event(event, AGENCY_KEYS[agency])


def opener(partner_id: str) -> Callable[[bytes], dict[str, Any]]:
    """Open what a partner's topic holds: sealed deliveries, and plain notices."""
    relay = seal.public_key_of(RELAY_KEY)

    def open_record(value: bytes) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(value)
        if "box" not in doc:
            return doc  # a consent.revoked notice carries no personal data and is not sealed
        return seal.open_delivery(
            value, partner_id=partner_id, partner_key=PARTNER_KEYS[partner_id], relay_key=relay
        ).event

    return open_record


REGISTRY = RegistryIn.model_validate(
    with_keys(
        {
            "agencies": [
                {"id": "harbor-outreach", "name": "Harbor Outreach", "jurisdiction": "state-a"},
                {"id": "valley-school", "name": "Valley School", "jurisdiction": "state-b"},
            ],
            "partners": [
                partner(
                    "lighthouse-shelter",
                    "shelter",
                    "service_referral",
                    [
                        "identity",
                        "contact",
                        "demographics",
                        "service_need",
                        "case_status",
                        "hiv_sti",
                    ],
                ),
                partner(
                    "northside-clinic",
                    "health",
                    "care_coordination",
                    ["identity", "contact", "demographics", "service_need", "health", "hiv_sti"],
                ),
                partner(
                    "metro-police",
                    "law_enforcement",
                    "investigation",
                    ["identity", "contact", "demographics", "victimization", "case_status"],
                ),
                *RULE_PARTNERS,
            ],
        }
    )
)


@contextmanager
def opa_server(s: Settings, port: int, tmp: Path) -> Iterator[None]:
    meta = tmp / "meta.json"
    meta.write_text(json.dumps({"revision": opa.policy_revision(s.policies_dir)}))
    proc = subprocess.Popen(
        [
            str(opa.binary(s)),
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{port}",
            "--ignore",
            "schemas",
            str(s.policies_dir),
            f"accord.meta:{meta}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("private OPA exited at start") from None
                time.sleep(0.1)
        yield
    finally:
        proc.kill()
        proc.wait()


def run_tag(s: Settings) -> str:
    """The session's tag: every topic, group and transactional id of the session, and of the
    settings tests derive from it, is named ``<tag>.…`` or ``<tag>-…``."""
    return s.topic_inbound.split(".")[0]


def audit_key_file(base: Settings, run: str) -> Path:
    path = base.state_dir / "keys" / f"{run}-audit.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base64.b64encode(bytes(AUDIT_KEY)).decode())
    path.chmod(0o400)
    return path


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


# A referral and the partners it goes to, for the audit and dashboard tests.
PARTNERS = ["lighthouse-shelter", "metro-police", "northside-clinic"]
REFERRAL = {
    "survivor_name": "Zephyrine Quillfeather",
    "age": 24,
    "phone": "+1-555-0100",
    "service_needs": ["housing"],
    "referral_reason": "needs safe housing",
    "hiv_status": "negative",
}


def fresh_database(url: str) -> sessionmaker[Session]:
    """Empty the database at ``url``, migrate it, load the test registry; its sessions."""
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    migrations.upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    with transaction(sessions) as session:
        load_registry(session=session, registry=REGISTRY)
    return sessions


def private_api(settings: Settings, name: str) -> tuple[Settings, sessionmaker[Session]]:
    """Settings for an API of a test module's own, and its database's sessions: the database
    ``<test database>_<name>`` emptied and migrated, topics and groups named under the session's
    tag (cleaned up with the session), a free port."""
    tag = f"{run_tag(settings)}-{name}{uuid.uuid4().hex[:6]}"
    db = f"{os.environ.get('ACCORD_TEST_DATABASE', 'accord_test')}_{name}"
    postgres.ensure_database(settings, db)
    url = postgres.url(settings, db)
    sessions = fresh_database(url)
    s = settings.model_copy(
        update={
            "database_url": url,
            "api_port": free_port(),
            "relay_group": tag,
            "topic_inbound": f"{tag}.inbound",
            "topic_decisions": f"{tag}.decisions",
            "topic_deadletter": f"{tag}.deadletter",
            "topic_consents": f"{tag}.consents",
            "partner_topic_prefix": f"{tag}.partner.",
        }
    )
    return s, sessions


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[str]:
    url = settings.sqlalchemy_url
    fresh_database(url)
    yield url


async def kafka_ready(s: Settings, partners: list[str] | None = None) -> None:
    """As the operator: grant these settings' topics to the relay, the API, the audit sink,
    the registry's agencies and partners (and ``partners``), then create the core topics.
    Every component then connects as its own principal, so the whole suite runs under the
    ACLs of ``services/kafka_acl.py``."""
    await provision(
        s,
        agencies=[a.id for a in REGISTRY.agencies],
        partners=[p.id for p in REGISTRY.partners] + (partners or []),
    )
    await topics.ensure_topics(kafka(s, ADMIN), topics.core_topics(s))


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


def cloudevent(agency: str, survivor: str, data: dict[str, Any], **over: Any) -> dict[str, Any]:
    doc = {
        "specversion": "1.0",
        "id": f"evt-{uuid.uuid4().hex[:12]}",
        "source": f"/agencies/{agency}",
        "type": "accord.referral.made",
        "subject": survivor,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }
    doc.update(over)
    return sign(doc)


def consent_change(
    settings: Settings, survivor: str, *provisions: dict[str, Any], version: int = 1
) -> bytes:
    """A consent snapshot as the API publishes it (sealed to the survivor)."""
    consents = [
        {
            "id": f"c-{survivor}",
            "version": version,
            "status": "active",
            "recorded_by": {"role": "self"},
            "provisions": list(provisions),
        }
    ]
    payload = json.dumps({"survivor_id": survivor, "consents": consents}).encode()
    return sealer(settings).snapshot(payload, survivor_id=survivor)


def permit(types: list[str], purposes: list[str], categories: list[str]) -> dict[str, Any]:
    return {
        "type": "permit",
        "recipients": {"partners": [], "partner_types": types},
        "purposes": purposes,
        "categories": categories,
        "period": {"start": "2026-01-01T00:00:00Z", "end": None},
    }


@dataclass
class Outcome:
    event: dict[str, Any]
    decisions: dict[str, dict[str, Any]]  # by partner
    deliveries: dict[str, list[dict[str, Any]]]  # by partner, only this event's


async def publish_and_collect(
    settings: Settings,
    producer: AIOKafkaProducer,
    event: dict[str, Any],
    partners: list[str],
    *,
    decisions: int | None = None,
) -> Outcome:
    """Publish one event and gather its decision records (one per subscribed partner: pass
    ``decisions`` when more partners are subscribed than watched) and what each partner got."""
    async with AsyncExitStack() as stack:
        decisions_c = await stack.enter_async_context(
            tail(kafka(settings, AUDIT), settings.topic_decisions)
        )
        consumers = {
            p: await stack.enter_async_context(
                tail(kafka(settings, kafka_client.partner(p)), settings.partner_topic(p))
            )
            for p in partners
        }
        await producer.send_and_wait(
            settings.topic_inbound, inbound_record(settings, event), key=event["subject"].encode()
        )
        expect = decisions if decisions is not None else len(partners)
        records = await collect(decisions_c, until=expect, timeout_s=30, settle_s=1)
        gathered = await asyncio.gather(
            *(
                collect(c, until=0, timeout_s=1, settle_s=0.3, opener=opener(p))
                for p, c in consumers.items()
            )
        )
        deliveries = {
            p: [d for d in got if d["id"] == event["id"]]
            for p, got in zip(consumers, gathered, strict=True)
        }
    mine = [r for r in records if r["event_id"] == event["id"]]
    return Outcome(event, {r["partner_id"]: r for r in mine}, deliveries)


@cache
def _sealer(url: str, state_dir: Path, keks: str) -> EventSealer:
    return EventSealer.for_settings(
        Settings().model_copy(update={"database_url": url, "state_dir": state_dir, "keks": keks})
    )


def sealer(settings: Settings) -> EventSealer:
    """Seals as agencies and the API do, with the keys of ``settings``' database."""
    return _sealer(settings.database_url, settings.state_dir, settings.keks)


def inbound_record(settings: Settings, event: dict[str, Any], *, fresh: bool = False) -> bytes:
    """``event`` as an agency publishes it to the inbound topic: sealed to its survivor
    (``fresh``: with the survivor's key read now, not one cached before an erasure)."""
    if fresh:
        once = EventSealer.for_settings(settings)
        try:
            return once(json.dumps(event).encode())
        finally:
            once.close()
    return sealer(settings)(json.dumps(event).encode())
