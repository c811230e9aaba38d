"""``accord pilot``: the compose pilot's initialisation and its smoke test (deploy/compose/).

``init`` does what ``accord dev up`` does for the dev stack, with the dev stack's own code,
for containers that share one state volume: the broker's CA and certificate (its compose
host name in the certificate), the SCRAM passwords, the rendered broker configuration and
the super user's format-time credential, the database password, the long-lived keys (relay,
key-encryption, audit appender, checkpoint) and ``stack.env`` with the services' addresses.
Then, once PostgreSQL and Kafka answer, the migrations, the fixed principals' credentials and
ACLs, and the topics. ``smoke`` registers one agency and one partner with fresh keys, publishes
one event over the HTTP API and reads it back from the partner's topic, opened with the
partner's key. Neither prints a secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from services import migrations
from services.atrest.keys import kek_ring, relay_key
from services.audit.signing import appender_key, create_dev_key
from services.audit.witness import witness_topic
from services.devstack import kafka as dev_kafka
from services.devstack import tls
from services.devstack.process import StackError, wait_until
from services.kafka import client as kafka_client
from services.kafka import provisioning as kafka_acl
from services.settings import Settings


@dataclass(frozen=True)
class PilotHosts:
    """Where the pilot's services are, by their compose names (ACCORD_PILOT_* to change)."""

    kafka: str = "kafka"
    postgres: str = "postgres"
    opa: str = "opa"
    kafka_port: int = 9093
    controller_port: int = 9094
    postgres_port: int = 5432
    opa_port: int = 8181

    @classmethod
    def from_env(cls) -> PilotHosts:
        env = os.environ
        return cls(
            kafka=env.get("ACCORD_PILOT_KAFKA_HOST", cls.kafka),
            postgres=env.get("ACCORD_PILOT_POSTGRES_HOST", cls.postgres),
            opa=env.get("ACCORD_PILOT_OPA_HOST", cls.opa),
            kafka_port=int(env.get("ACCORD_PILOT_KAFKA_PORT", cls.kafka_port)),
            controller_port=int(env.get("ACCORD_PILOT_CONTROLLER_PORT", cls.controller_port)),
            postgres_port=int(env.get("ACCORD_PILOT_POSTGRES_PORT", cls.postgres_port)),
            opa_port=int(env.get("ACCORD_PILOT_OPA_PORT", cls.opa_port)),
        )


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _database_password(s: Settings) -> str:
    path = s.state_dir / "postgres" / "password"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def database_url(s: Settings, hosts: PilotHosts) -> str:
    password = _database_password(s)
    return f"postgresql+psycopg://accord:{password}@{hosts.postgres}:{hosts.postgres_port}/accord"


def prepare(s: Settings, hosts: PilotHosts) -> list[str]:
    """Everything the containers need before they start (idempotent). Returns what was done."""
    done = []
    s.state_dir.mkdir(parents=True, exist_ok=True)
    tls.ensure_broker_tls(s.state_dir / "kafka" / "tls", hosts=[hosts.kafka])
    cfg = s.model_copy(
        update={"kafka_port": hosts.kafka_port, "kafka_controller_port": hosts.controller_port}
    )
    dev_kafka.render_config(cfg, host=hosts.kafka, listen_host="0.0.0.0")  # noqa: S104
    done.append(f"kafka: certificate for {hosts.kafka}, configuration, SCRAM passwords")
    kafka_dir = s.state_dir / "kafka"
    if not (kafka_dir / "cluster.id").exists():
        (kafka_dir / "cluster.id").write_text(dev_kafka.cluster_id_for_cli())
    admin_password = kafka_client.load_credentials(s)[kafka_client.ADMIN]
    _write_private(
        kafka_dir / "scram",
        f"SCRAM-SHA-512=[name={kafka_client.ADMIN},password={admin_password}]",
    )
    url = database_url(s, hosts)
    done.append("postgres: password")
    # The long-lived keys, made once here so that no two containers race to make them.
    relay_key(s)
    kek_ring(s)
    appender_key(s)
    create_dev_key(s)
    done.append("keys: relay, key-encryption, audit appender, checkpoint (pilot only)")
    _write_private(
        s.state_dir / "stack.env",
        f"ACCORD_KAFKA_BOOTSTRAP={hosts.kafka}:{hosts.kafka_port}\n"
        f"ACCORD_OPA_URL=http://{hosts.opa}:{hosts.opa_port}\n"
        f"ACCORD_DATABASE_URL={url}\n",
    )
    done.append("stack.env: the services' addresses")
    return done


async def _kafka_ready(s: Settings) -> bool:
    """True once the broker answers the super user and coordinates groups and transactions."""
    admin = AIOKafkaAdminClient(
        **kafka_client.kafka(s, kafka_client.ADMIN).kwargs(), request_timeout_ms=3000
    )
    try:
        await admin.start()
        for kind in (dev_kafka.GROUP, dev_kafka.TRANSACTION):
            await admin.find_coordinator("accord-pilot-probe", kind)
        return True
    except Exception:  # not up yet
        return False
    finally:
        await admin.close()


def provision(s: Settings, *, timeout_s: float = 180.0) -> list[str]:
    """Once PostgreSQL and Kafka answer: migrations, the fixed principals, the topics."""
    from sqlalchemy import create_engine, text

    def database_up() -> bool:
        try:
            with create_engine(s.sqlalchemy_url).connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # not up yet
            return False

    wait_until(database_up, what="postgres", timeout_s=timeout_s)
    migrations.upgrade(s.sqlalchemy_url)
    wait_until(lambda: asyncio.run(_kafka_ready(s)), what="kafka", timeout_s=timeout_s)
    principals = asyncio.run(kafka_acl.provision(s))
    from services.kafka import topics

    admin = kafka_client.kafka(s, kafka_client.ADMIN)
    created = asyncio.run(topics.ensure_topics(admin, [*topics.core_topics(s), witness_topic(s)]))
    return [
        "postgres: migrations at head",
        f"kafka: {len(principals)} principals with their ACLs",
        f"kafka: {len(created)} topics created",
    ]


# The smoke test: one adult survivor who consented to shelters receiving referrals.
SURVIVOR = "sv-pilot-smoke"
AGENCY, PARTNER = "pilot-agency", "pilot-shelter"


def _registry(agency_key: SigningKey, partner_key: PrivateKey) -> dict[str, Any]:
    from services.broker.pipeline import seal
    from services.events import provenance

    return {
        "agencies": [
            {
                "id": AGENCY,
                "name": "Pilot outreach agency",
                "jurisdiction": "state-a",
                "public_key": provenance.public_key_of(agency_key),
            }
        ],
        "partners": [
            {
                "id": PARTNER,
                "name": "Pilot shelter",
                "type": "shelter",
                "jurisdiction": "state-a",
                "vetted": True,
                "training_attested_until": "2030-01-01T00:00:00Z",
                "public_key": seal.public_key_of(partner_key),
                "agreements": [
                    {
                        "id": "mou-pilot",
                        "purposes": ["service_referral"],
                        "categories": ["identity", "contact", "demographics", "service_need"],
                        "valid_from": "2026-01-01T00:00:00Z",
                        "valid_until": "2030-01-01T00:00:00Z",
                    }
                ],
                "subscriptions": [
                    {
                        "id": "sub-pilot",
                        "purpose": "service_referral",
                        "event_types": ["accord.referral.made"],
                    }
                ],
            }
        ],
    }


CONSENT = {
    "id": "consent-pilot-smoke",
    "version": 1,
    "status": "active",
    "recorded_by": {"role": "advocate"},
    "provisions": [
        {
            "type": "permit",
            "recipients": {"partners": [], "partner_types": ["shelter"]},
            "purposes": ["service_referral"],
            "categories": ["*"],
            "period": {"start": "2026-01-01T00:00:00Z", "end": None},
        }
    ],
}


@dataclass(frozen=True)
class SmokeResult:
    event_id: str
    status_code: int
    outcome: str
    fields_received: list[str]
    seconds: float


async def _smoke(s: Settings, api_url: str, timeout_s: float) -> SmokeResult:
    from services.auth.principals import Role
    from services.auth.service import issue_credential
    from services.broker.pipeline import seal
    from services.broker.survivor_keys import EventSealer
    from services.db import make_engine, make_sessionmaker, transaction
    from services.events import provenance
    from services.kafka import topics
    from services.registry.schemas import RegistryIn
    from services.registry.service import load_registry
    from services.sdk.partner import collect, tail

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=api_url, timeout=5) as http:
        while True:  # the API is ready once Kafka, PostgreSQL and OPA answer it
            try:
                if (await http.get("/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout_s:
                raise StackError(f"the API at {api_url} was not ready within {timeout_s:.0f}s")
            await asyncio.sleep(1)
    agency_key, partner_key = SigningKey.generate(), PrivateKey.generate()
    registry = RegistryIn.model_validate(_registry(agency_key, partner_key))
    sessions = make_sessionmaker(make_engine(s.sqlalchemy_url))
    with transaction(sessions) as session:
        load_registry(session=session, registry=registry)
        api_key = issue_credential(session=session, role=Role.AGENCY, subject=AGENCY)
    await kafka_acl.provision(s, agencies=[AGENCY], partners=[PARTNER])
    admin = kafka_client.kafka(s, kafka_client.ADMIN)
    await topics.ensure_topics(admin, topics.partner_topics(s, [PARTNER]))
    # The survivor's consents, as the API's consent publisher writes them.
    producer = AIOKafkaProducer(**kafka_client.kafka(s, kafka_client.API).kwargs(), acks="all")
    await producer.start()
    sealer = EventSealer.for_settings(s)
    try:
        snapshot = json.dumps({"survivor_id": SURVIVOR, "consents": [CONSENT]}).encode()
        value = sealer.snapshot(snapshot, survivor_id=SURVIVOR)
        await producer.send_and_wait(s.topic_consents, value, key=SURVIVOR.encode())
    finally:
        sealer.close()
        await producer.stop()
    event = provenance.sign_event(
        {
            "specversion": "1.0",
            "id": f"pilot-{uuid.uuid4().hex[:12]}",
            "source": f"/agencies/{AGENCY}",
            "type": "accord.referral.made",
            "subject": SURVIVOR,
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": {
                "survivor_name": "P. Example",
                "age": 30,
                "service_needs": ["housing"],
                "referral_reason": "needs safe housing",
                "hiv_status": "negative",
            },
        },
        agency_key,
    )
    relay_public = seal.public_key_of(relay_key(s))

    def open_sealed(value: bytes) -> dict[str, Any]:
        opened = seal.open_delivery(
            value, partner_id=PARTNER, partner_key=partner_key, relay_key=relay_public
        )
        return dict(opened.event)

    partner_conn = kafka_client.kafka(s, kafka_client.partner(PARTNER))
    async with tail(partner_conn, s.partner_topic(PARTNER)) as c:
        async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
            answer = await http.post(
                "/v1/events",
                json=event,
                headers={
                    "Authorization": f"Bearer {api_key}",
                    "Content-Type": "application/cloudevents+json",
                },
            )
        if answer.status_code >= 300:
            raise StackError(f"POST /v1/events answered {answer.status_code}")
        got = [
            d
            for d in await collect(c, until=1, timeout_s=timeout_s, opener=open_sealed)
            if d.get("id") == event["id"]
        ]
    if not got:
        raise StackError(f"no delivery of {event['id']} to {PARTNER} within {timeout_s:.0f}s")
    return SmokeResult(
        event_id=str(event["id"]),
        status_code=answer.status_code,
        outcome="delivered",
        fields_received=sorted(got[0].get("data", {})),
        seconds=round(time.monotonic() - started, 1),
    )


def smoke(s: Settings, api_url: str, timeout_s: float = 90.0) -> SmokeResult:
    return asyncio.run(_smoke(s, api_url, timeout_s))
