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
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from nacl.public import PrivateKey

from services.broker import topics
from services.broker.partner import collect, tail
from services.broker.pipeline.decide import OpaPolicy
from services.broker.pipeline.seal import Sealer
from services.broker.pipeline.validate import SchemaRegistry
from services.broker.registry import SqlRegistry
from services.broker.relay import Relay
from services.broker.replay import StaticSeen
from services.broker.schemas import RegistryIn
from services.broker.service import load_registry
from services.consent.view import StaticConsentView
from services.db import make_engine, make_sessionmaker, transaction
from services.settings import Settings
from tests.integration.conftest import (
    ALL_CATEGORIES,
    cloudevent,
    free_port,
    opa_server,
    opener,
    partner,
    permit,
    with_keys,
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
    s = settings.model_copy(
        update={
            "topic_inbound": f"{tag}.inbound",
            "topic_decisions": f"{tag}.decisions",
            "topic_deadletter": f"{tag}.deadletter",
            "topic_consents": f"{tag}.consents",
            "topic_seen": f"{tag}.seen",
            "partner_topic_prefix": f"{tag}.partner.",
            "relay_group": f"{tag}-relay",
            "relay_transactional_id": f"{tag}-relay-0",
        }
    )
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
    await topics.ensure_topics(s.bootstrap_servers, topics.core_topics(s))
    await topics.ensure_topics(s.bootstrap_servers, topics.partner_topics(s, PARTNER_IDS))
    for survivor, consents in CONSENTS.items():
        record = {"survivor_id": survivor, "seq": 1, "consents": consents}
        await producer.send(s.topic_consents, json.dumps(record).encode(), key=survivor.encode())
    await producer.flush()
    return Run(s, [make_event(n) for n in range(EVENTS)])


def relay_env(s: Settings) -> dict[str, str]:
    names = [
        "topic_inbound",
        "topic_decisions",
        "topic_deadletter",
        "topic_consents",
        "topic_seen",
        "partner_topic_prefix",
        "relay_group",
        "relay_transactional_id",
        "database_url",
        "relay_private_key",
        "opa_url",
        "opa_timeout_s",
        "relay_retry_max_s",
    ]
    env = dict(os.environ)
    env.update({f"ACCORD_{n.upper()}": str(getattr(s, n)) for n in names})
    return env


class RelayProcess:
    """`accord relay` as a child process that the test can SIGKILL and start again."""

    def __init__(self, s: Settings, log: Path) -> None:
        self._env = relay_env(s)
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        accord = Path(sys.executable).with_name("accord")
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(accord), "relay"], env=self._env, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@asynccontextmanager
async def relay_process(s: Settings, log: Path) -> AsyncIterator[RelayProcess]:
    relay = RelayProcess(s, log)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


async def publish_steadily(s: Settings, producer: AIOKafkaProducer, events: list[bytes]) -> None:
    """About 250 events a second, so the faults land in the middle of a stream."""
    for start in range(0, len(events), 50):
        for value in events[start : start + 50]:
            key = json.loads(value)["subject"].encode()
            await producer.send(s.topic_inbound, value, key=key)
        await asyncio.sleep(0.2)
    await producer.flush()


async def read_all(s: Settings, topic: str, *, until: int, timeout_s: float) -> list[bytes]:
    """Every committed record of ``topic`` from the beginning, waiting for ``until`` of them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.bootstrap_servers,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        parts = await topics.partitions(s.bootstrap_servers, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        quiet_since = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                got.extend(r.value for r in records if r.value is not None)
            if batch:
                quiet_since = loop.time()
            elif len(got) >= until and loop.time() - quiet_since > 2:
                break  # everything expected, and nothing more for 2 s
        return got
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Expected:
    released: dict[tuple[str, str], list[str]]  # (event id, partner) → released fields
    delivered: set[tuple[str, str]]  # pairs with a delivery


@dataclass
class _Msg:
    offset: int
    value: bytes


async def recompute(s: Settings, database: str, events: list[bytes]) -> Expected:
    """The decisions from scratch: an in-process relay over the same inputs, no Kafka."""
    registry = SqlRegistry(make_sessionmaker(make_engine(database)))
    view = StaticConsentView(CONSENTS)
    released: dict[tuple[str, str], list[str]] = {}
    delivered: set[tuple[str, str]] = set()
    async with OpaPolicy(Settings().opa_base_url, timeout_s=10) as policy:
        relay = Relay(
            s,
            registry=registry,
            consents=view,
            policy=policy,
            schemas=SchemaRegistry(s.schemas_dir / "events"),
            seen=StaticSeen(),
            sealer=Sealer(PrivateKey.generate()),
            clock=lambda: datetime.now(UTC),
        )
        snapshot = registry.snapshot()
        tp = TopicPartition(s.topic_inbound, 0)
        for start in range(0, len(events), 500):
            chunk = [_Msg(start + i, v) for i, v in enumerate(events[start : start + 500])]
            result = await relay.process({tp: chunk}, snapshot)
            assert result.rejected == 0
            for record in result.records:
                if record.topic == s.topic_decisions:
                    d = json.loads(record.value)
                    released[(d["event_id"], d["partner_id"])] = sorted(d["released"])
                    if d["delivery_id"]:
                        delivered.add((d["event_id"], d["partner_id"]))
    return Expected(released, delivered)


async def check_exactly_once(s: Settings, database: str, events: list[bytes]) -> dict[str, int]:
    expected = await recompute(s, database, events)
    assert len(expected.released) == EVENTS * len(PARTNER_IDS)
    raw = await read_all(s, s.topic_decisions, until=len(expected.released), timeout_s=240)
    decisions = [json.loads(v) for v in raw]
    pairs = Counter((d["event_id"], d["partner_id"]) for d in decisions)
    twice = [p for p, n in pairs.items() if n > 1]
    assert not twice, f"{len(twice)} pairs decided twice, e.g. {twice[:3]}"
    assert set(pairs) == set(expected.released), "decisions missing or unexpected"
    for d in decisions:
        key = (d["event_id"], d["partner_id"])
        assert sorted(d["released"]) == expected.released[key], f"decision differs for {key}"

    decided_deliveries = {(d["event_id"], d["partner_id"]) for d in decisions if d["delivery_id"]}
    counts: dict[str, int] = {}
    for pid in PARTNER_IDS:
        want = {e for e, p in expected.delivered if p == pid}
        records = await read_all(s, s.partner_topic(pid), until=len(want), timeout_s=60)
        open_record = opener(pid)
        got = [open_record(v) for v in records]
        ids = Counter(g["id"] for g in got)
        assert all(n == 1 for n in ids.values()), f"{pid} received a delivery twice"
        assert set(ids) == want, (
            f"{pid}: {len(want - set(ids))} missing, {len(set(ids) - want)} extra"
        )
        for g in got:
            assert (g["id"], pid) in decided_deliveries, "a delivery without its decision record"
            assert sorted(g["data"]) == expected.released[(g["id"], pid)], "undecided field"
        counts[pid] = len(got)
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
        counts = await check_exactly_once(s, database, run.events)
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
        tail(s.bootstrap_servers, s.topic_decisions) as decided,
        relay_process(s, tmp_path / "relay.log") as relay,
    ):
        with opa_server(s, port, tmp_path):
            publishing = asyncio.create_task(publish_steadily(s, producer, run.events))
            before = await collect(decided, until=100, timeout_s=30)
        # OPA is down while events keep coming. A batch decided just before may still commit.
        await asyncio.sleep(2)
        await collect(decided, until=10**9, timeout_s=0.5)
        during = await collect(decided, until=10**9, timeout_s=20)
        assert relay.alive()
        with opa_server(s, port, tmp_path):
            await publishing
            counts = await check_exactly_once(s, database, run.events)
    assert len(before) >= 100
    assert during == [], "decisions were made while OPA was down"
    print(f"deliveries per partner around a 20 s OPA outage: {counts}")
