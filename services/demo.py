"""``accord demo``: the whole flow on the real local stack, printed as a readable summary.

Two agencies publish (one over the HTTP ingest API, one straight to Kafka); the relay asks
OPA for every subscribed partner; each partner's topic is read back and shown next to what
the decision records say was withheld and why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import typer
from aiokafka import AIOKafkaProducer
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from services import devstack, migrations
from services.atrest.keys import relay_key as relay_private_key
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.broker.pipeline import seal
from services.broker.survivor_keys import EventSealer, seal_all
from services.db import make_engine, make_sessionmaker, transaction
from services.decision_records import split_decisions
from services.events import provenance
from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.client import ADMIN, API, AUDIT, kafka
from services.kafka.provisioning import provision
from services.registry.schemas import RegistryIn
from services.registry.service import load_registry
from services.runtime import running_api, running_checkpointer, running_relay, running_sinks
from services.sdk.partner import collect, tail
from services.settings import REPO_ROOT, Settings

REGISTRY = REPO_ROOT / "deploy" / "demo" / "registry.json"


def _event(agency: str, survivor: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"demo-{uuid.uuid4().hex[:12]}",
        "source": f"/agencies/{agency}",
        "type": event_type,
        "subject": survivor,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }


ADULT = "sv-demo-adult"
MINOR = "sv-demo-minor"

# What the consent service (issue 3) publishes: each survivor's complete current consents.
CONSENTS = {
    ADULT: [
        {
            "id": "consent-demo-adult",
            "version": 1,
            "status": "active",
            "recorded_by": {"role": "advocate"},
            "provisions": [
                {
                    "type": "permit",
                    "recipients": {"partners": [], "partner_types": ["shelter", "health"]},
                    "purposes": ["service_referral", "care_coordination"],
                    "categories": ["*", "hiv_sti"],
                    "period": {"start": "2026-01-01T00:00:00Z", "end": None},
                }
            ],
        }
    ]
}


@dataclass(frozen=True)
class DemoKeys:
    """Keys made fresh for each demo run and never written anywhere: agencies sign with
    theirs, partners open their deliveries with theirs."""

    agencies: dict[str, SigningKey]
    partners: dict[str, PrivateKey]


def _seed(s: Settings, keys: DemoKeys) -> dict[str, str]:
    migrations.upgrade(s.sqlalchemy_url)
    sessions = make_sessionmaker(make_engine(s.sqlalchemy_url))
    doc = json.loads(REGISTRY.read_text())
    for agency in doc["agencies"]:
        agency["public_key"] = provenance.public_key_of(keys.agencies[agency["id"]])
    for partner in doc["partners"]:
        partner["public_key"] = seal.public_key_of(keys.partners[partner["id"]])
    registry = RegistryIn.model_validate(doc)
    with transaction(sessions) as session:
        load_registry(session=session, registry=registry)
        return {
            a.id: issue_credential(session=session, role=Role.AGENCY, subject=a.id)
            for a in registry.agencies
        }


async def _run(s: Settings) -> None:
    doc = json.loads(REGISTRY.read_text())
    demo_keys = DemoKeys(
        {a["id"]: SigningKey.generate() for a in doc["agencies"]},
        {p["id"]: PrivateKey.generate() for p in doc["partners"]},
    )
    keys = _seed(s, demo_keys)
    # Each agency and partner gets a Kafka principal of its own, allowed only its own topics.
    await provision(s, agencies=demo_keys.agencies, partners=demo_keys.partners)
    await topics.ensure_topics(kafka(s, ADMIN), topics.core_topics(s))
    # The consent snapshots as the API's consent publisher writes them (no consent API here).
    consent_producer = AIOKafkaProducer(**kafka(s, API).kwargs(), acks="all")
    await consent_producer.start()
    sealer = EventSealer.for_settings(s)
    try:
        for survivor, consents in CONSENTS.items():
            payload = json.dumps({"survivor_id": survivor, "consents": consents}).encode()
            value = sealer.snapshot(payload, survivor_id=survivor)
            await consent_producer.send_and_wait(s.topic_consents, value, key=survivor.encode())
    finally:
        sealer.close()
        await consent_producer.stop()
    # valley-school publishes straight to Kafka, as itself.
    producer = AIOKafkaProducer(
        **kafka(s, kafka_client.agency("valley-school")).kwargs(), acks="all"
    )
    await producer.start()
    try:
        adult = _event(
            "harbor-outreach",
            ADULT,
            "accord.referral.made",
            {
                "survivor_name": "A. Example",
                "age": 24,
                "phone": "+1-555-0100",
                "service_needs": ["housing", "medical"],
                "referral_reason": "needs safe housing",
                "shelter_address": "(undisclosed) 12 Hidden Lane",
                "hiv_status": "negative",
                "immigration_status": "visa pending",
                "narrative": "survivor's own account",
                "caseworker_notes_internal": "internal only",
                "nickname": "unclassified field",
            },
        )
        minor = _event(
            "valley-school",
            MINOR,
            "accord.case.identified",
            {
                "survivor_name": "B. Example",
                "age": 15,
                "exploitation_type": "labor",
                "safety_status": "at risk",
                "reporting_agency": "valley-school",
                "reported_at": datetime.now(UTC).isoformat(),
                "phone": "+1-555-0101",
                "narrative": "disclosed to counsellor",
            },
        )
        adult = provenance.sign_event(adult, demo_keys.agencies["harbor-outreach"])
        minor = provenance.sign_event(minor, demo_keys.agencies["valley-school"])
        partners = sorted(demo_keys.partners)
        await topics.ensure_topics(kafka(s, ADMIN), topics.partner_topics(s, partners))
        async with (
            running_relay(s),
            running_sinks(s),  # as `accord sink` would: the audit chain and rejections
            running_checkpointer(s),  # signs and witnesses the audit chain (docs/audit.md)
            running_api(s) as base,
            tail(kafka(s, AUDIT), s.topic_decisions) as decisions,
        ):
            received: dict[str, list[dict[str, Any]]] = {}
            tails = {
                p: tail(kafka(s, kafka_client.partner(p)), s.partner_topic(p)) for p in partners
            }
            consumers = {p: await t.__aenter__() for p, t in tails.items()}
            try:
                async with httpx.AsyncClient(base_url=base) as http:
                    r = await http.post(
                        "/v1/events",
                        json=adult,
                        headers={
                            "Authorization": f"Bearer {keys['harbor-outreach']}",
                            "Content-Type": "application/cloudevents+json",
                        },
                    )
                    r.raise_for_status()
                typer.echo(f"harbor-outreach published {adult['type']} over HTTP ({r.status_code})")
                await producer.send_and_wait(
                    s.topic_inbound,
                    seal_all(s, [json.dumps(minor).encode()])[0],
                    key=MINOR.encode(),
                )
                typer.echo(f"valley-school published {minor['type']} straight to Kafka")
                ids = {adult["id"], minor["id"]}
                records = [
                    d
                    for d in await collect(
                        decisions, until=2 * len(partners), timeout_s=60, split=split_decisions
                    )
                    if d["event_id"] in ids
                ]
                relay_key = seal.public_key_of(relay_private_key(s))
                for p, consumer in consumers.items():

                    def open_sealed(value: bytes, p: str = p) -> dict[str, Any]:
                        return seal.open_delivery(
                            value,
                            partner_id=p,
                            partner_key=demo_keys.partners[p],
                            relay_key=relay_key,
                        ).event

                    received[p] = await collect(
                        consumer, until=0, timeout_s=2, settle_s=1.0, opener=open_sealed
                    )
            finally:
                for t in tails.values():
                    await t.__aexit__(None, None, None)
    finally:
        await producer.stop()
    _print(adult, minor, records, received)


def _print(
    adult: dict[str, Any],
    minor: dict[str, Any],
    records: list[dict[str, Any]],
    received: dict[str, list[dict[str, Any]]],
) -> None:
    for event, who in ((adult, "adult, 24, state A"), (minor, "minor, 15, state B")):
        typer.echo(f"\n== {event['type']} about {event['subject']} ({who}) ==")
        typer.echo(f"   fields published: {', '.join(sorted(event['data']))}")
        for rec in sorted(
            (r for r in records if r["event_id"] == event["id"]), key=lambda r: r["partner_id"]
        ):
            got = [d for d in received.get(rec["partner_id"], []) if d["id"] == event["id"]]
            fields = sorted(got[0]["data"]) if got else []
            basis = ", ".join(rec["basis"]) or "none"
            typer.echo(
                f"-- {rec['partner_id']} ({rec['partner_type']}, {rec['purpose']}): "
                f"{rec['outcome']}, basis: {basis}"
            )
            typer.echo(f"   received: {', '.join(fields) if fields else '(nothing)'}")
            withheld = ", ".join(f"{w['field']} [{'/'.join(w['rules'])}]" for w in rec["withheld"])
            typer.echo(f"   withheld: {withheld or '(nothing)'}")
    typer.echo(
        "\nEvery delivery above was sealed to its partner and opened with that partner's key."
    )
    typer.echo(
        f"\n{len(records)} decisions recorded; policy revision "
        f"{records[0]['policy_revision'] if records else '?'}"
    )


def run_demo(s: Settings) -> None:
    # Kafka clients log transient retries (a new topic's leader election) at WARNING.
    logging.basicConfig(level=logging.ERROR)
    devstack.up(s, echo=typer.echo)
    asyncio.run(_run(Settings()))  # re-read: `up` wrote the stack's addresses


__all__ = ["run_demo"]
