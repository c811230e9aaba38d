"""Exactly once under faults, on the real stack: 5,000 events for 5 partners while the relay
process is SIGKILLed three times, and while OPA is stopped for 20 seconds.

The relay runs as a real `accord relay` process. Afterwards every partner topic and the
decision topic are read back from the beginning (read_committed) and compared with the
decisions recomputed from scratch by an in-process relay over the same events, consents,
registry and policy: every expected delivery is there once, no other, and each carries
exactly the fields its decision released.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.db import make_engine, make_sessionmaker, transaction
from services.decision_records import split_decisions
from services.kafka import topics
from services.kafka.client import ADMIN, AUDIT, kafka
from services.registry.schemas import RegistryIn
from services.registry.service import load_registry
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.events import cloudevent, sealer
from tests.support.keys import opener, with_keys
from tests.support.registry import ALL_CATEGORIES, partner, permit
from tests.support.stack import free_port, kafka_ready, opa_server
from tools.bench.harness import (
    check,
    publish_steadily,
    read_all,
    recompute,
    relay_process,
    scoped,
)

pytestmark = pytest.mark.integration

EVENTS = 5000
SURVIVORS = 40
EVENT_TYPE = "accord.case_plan.updated"  # only the partners below subscribe to it
CRASH_PARTNERS = [
    ("crash-vs", "victim_services", "care_coordination"),
    ("crash-housing", "housing", "service_referral"),
    ("crash-legal", "legal_aid", "care_coordination"),
    ("crash-police", "law_enforcement", "investigation"),
    ("crash-cps", "child_welfare", "mandated_report"),
]
PARTNER_IDS = [p for p, _, _ in CRASH_PARTNERS]


def deny(categories: list[str]) -> dict[str, Any]:
    return {**permit(["*"], ["*"], categories), "type": "deny"}


def consents_of(i: int) -> list[dict[str, Any]]:
    """Realistic variety: a quarter without consent, the rest with different provisions."""
    provisions: list[dict[str, Any]] = []
    if i % 4 == 1:
        provisions = [permit(["victim_services", "housing"], ["*"], ["*"])]
    elif i % 4 == 2:
        provisions = [
            permit(["victim_services", "legal_aid", "housing"], ["*"], ["*", "immigration"]),
            deny(["immigration", "service_need"]),
        ]
    elif i % 4 == 3:
        provisions = [permit(["law_enforcement", "legal_aid"], ["*"], ["*", "court"])]
    if not provisions:
        return []
    return [
        {
            "id": f"c-crash-{i}",
            "version": 1,
            "status": "active",
            "recorded_by": {"role": "self"},
            "provisions": provisions,
        }
    ]


CONSENTS = {f"sv-crash-{i}": consents_of(i) for i in range(SURVIVORS)}


def make_event(n: int) -> bytes:
    survivor = f"sv-crash-{n % SURVIVORS}"
    data: dict[str, Any] = {
        "survivor_name": f"Name {n}",
        "case_status": random.choice(["open", "active", "closing"]),
        "goals": ["housing", "counselling"][: 1 + n % 2],
        "plan_id": f"plan-{n}",
        "plan_version": 1 + n % 7,
    }
    if n % 3 == 0:
        data["immigration_status"] = "pending"
    if n % 5 == 0:
        data["court_name"] = "County Court"
        data["hearing_date"] = "2027-01-15T09:30:00Z"
    if n % 11 == 0:
        data["caseworker_notes_internal"] = "internal"
    return json.dumps(cloudevent("harbor-outreach", survivor, data, type=EVENT_TYPE)).encode()


@dataclass(frozen=True)
class Run:
    settings: Settings
    events: list[bytes]


@pytest.fixture
async def run(settings: Settings, database: str, producer: AIOKafkaProducer) -> Run:
    """Own topics and group; the five partners registered; consents on the consent topic."""
    tag = settings.topic_inbound.split(".")[0] + f"-cr{free_port()}"
    s = scoped(settings, tag)
    registry = with_keys(
        {
            "agencies": [],
            "partners": [
                partner(pid, ptype, purpose, ALL_CATEGORIES, event_types=[EVENT_TYPE])
                for pid, ptype, purpose in CRASH_PARTNERS
            ],
        }
    )
    sessions = make_sessionmaker(make_engine(database))
    with transaction(sessions) as session:
        load_registry(session=session, registry=RegistryIn.model_validate(registry))
    await kafka_ready(s)
    await topics.ensure_topics(kafka(s, ADMIN), topics.partner_topics(s, PARTNER_IDS))
    for survivor, consents in CONSENTS.items():
        record = {"survivor_id": survivor, "seq": 1, "consents": consents}
        value = sealer(s).snapshot(json.dumps(record).encode(), survivor_id=survivor)
        await producer.send(s.topic_consents, value, key=survivor.encode())
    await producer.flush()
    return Run(s, [make_event(n) for n in range(EVENTS)])


async def check_exactly_once(s: Settings, events: list[bytes]) -> dict[str, int]:
    expected = await recompute(s, events, CONSENTS)
    assert len(expected.released) == EVENTS * len(PARTNER_IDS)
    counted, _, deliveries = await check(s, expected, PARTNER_IDS, opener, sent=len(events))
    assert counted.ok, f"{counted}"
    # A relay that takes a partition over goes on from the committed offsets: nothing is read
    # twice, so nothing is refused as replayed (the replay guard is only the second line).
    assert await read_all(s, s.topic_deadletter, until=0, timeout_s=5) == []
    counts = {pid: len(got) for pid, got in deliveries.items()}
    assert sum(counts.values()) > EVENTS, "the scenario must deliver a good share of pairs"
    assert any(not fields for fields in expected.released.values()), "and refuse some"
    return counts


async def test_sigkill_three_times_every_partner_gets_each_delivery_exactly_once(
    run: Run, database: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    s = run.settings
    rng = random.Random()
    async with relay_process(s, tmp_path / "relay.log") as relay:
        publishing = asyncio.create_task(publish_steadily(s, producer, run.events))
        for _ in range(3):
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            relay.kill()
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            relay.start()
        await publishing
        counts = await check_exactly_once(s, run.events)
        assert relay.alive()
    assert relay.starts == 4
    print(f"deliveries per partner after 3 SIGKILLs: {counts}")


async def test_opa_stopped_20s_nothing_undecided_nothing_lost(
    run: Run, database: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    port = free_port()
    s = run.settings.model_copy(
        update={
            "opa_url": f"http://127.0.0.1:{port}",
            "opa_timeout_s": 1.5,
            "relay_retry_max_s": 1.0,
        }
    )
    async with (
        tail(kafka(s, AUDIT), s.topic_decisions) as decided,
        relay_process(s, tmp_path / "relay.log") as relay,
    ):
        with opa_server(s, port, tmp_path):
            publishing = asyncio.create_task(publish_steadily(s, producer, run.events))
            before = await collect(decided, until=100, timeout_s=30, split=split_decisions)
        # OPA is down while events keep coming. A batch decided just before may still commit.
        await asyncio.sleep(2)
        await collect(decided, until=10**9, timeout_s=0.5, split=split_decisions)
        during = await collect(decided, until=10**9, timeout_s=20, split=split_decisions)
        assert relay.alive()
        with opa_server(s, port, tmp_path):
            await publishing
            counts = await check_exactly_once(s, run.events)
    assert len(before) >= 100
    assert during == [], "decisions were made while OPA was down"
    print(f"deliveries per partner around a 20 s OPA outage: {counts}")
