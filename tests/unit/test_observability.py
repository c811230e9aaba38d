"""The observability package: label values, the relay's tally, readiness checks, the health
port (a real aiohttp server on 127.0.0.1, any free port)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, update

from services.audit import store
from services.audit.models import AuditEntry
from services.broker.pipeline.decide import PolicyUnavailable
from services.broker.pipeline.validate import SchemaRegistry
from services.broker.registry import RegistryUnavailable
from services.db import Base, make_engine, make_sessionmaker, transaction
from services.kafka.compacted import ViewUnavailable
from services.observability import metrics
from services.observability.readiness import database_check, readiness
from services.observability.server import running_health
from tests.support.stand_ins import StandInConsumer
from tests.unit.test_audit_store import APPENDER, KEY, fill
from tests.unit.test_relay_process import SNAPSHOT, Msg, RecordingPolicy, event, relay


def test_rule_labels_are_bounded() -> None:
    assert [metrics.rule_label(r) for r in ("R1", "R15", "R99")] == ["R1", "R15", "R99"]
    assert metrics.rule_label("sv-123 Jane") == "other"
    assert metrics.rule_label("R100") == "other"


def test_hold_causes_are_bounded() -> None:
    causes = [
        metrics.hold_cause(e)
        for e in (
            PolicyUnavailable("x"),
            ViewUnavailable("x"),
            RegistryUnavailable("x"),
            KafkaConnectionError(),
            RuntimeError("x"),
        )
    ]
    assert causes == list(metrics.HOLD_CAUSES)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_committed_tally_moves_each_counter_by_its_amount() -> None:
    tally = metrics.BatchTally(relayed=2)
    tally.dead_letters["schema"] += 1
    tally.decided("partial", "health", ["R2", "R6", "R6", "bogus"])
    tally.decided("deny", "law_enforcement", ["R4"])
    tally.decided("allow", "health", [])
    names = [
        ("accord_relay_events_total", {"result": "relayed"}, 2),
        ("accord_relay_events_total", {"result": "rejected"}, 1),
        ("accord_relay_dead_letters_total", {"code": "schema"}, 1),
        ("accord_relay_deliveries_total", {"partner_type": "health"}, 2),
        ("accord_relay_deliveries_total", {"partner_type": "law_enforcement"}, 0),
        ("accord_relay_decisions_total", {"outcome": "deny", "partner_type": "law_enforcement"}, 1),
        ("accord_relay_decision_rules_total", {"outcome": "partial", "rule": "R6"}, 1),
        ("accord_relay_decision_rules_total", {"outcome": "partial", "rule": "other"}, 1),
        ("accord_relay_decision_rules_total", {"outcome": "deny", "rule": "R4"}, 1),
    ]
    before = [sample(n, **ls) for n, ls, _ in names]
    metrics.record_batch(tally)
    after = [sample(n, **ls) for n, ls, _ in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [n for _, _, n in names]


def test_stage_times_are_observed_in_seconds() -> None:
    before = sample("accord_relay_stage_seconds_sum", stage="decide")
    metrics.record_stages({"decide": 250.0})
    assert sample("accord_relay_stage_seconds_sum", stage="decide") - before == pytest.approx(0.25)


async def test_readiness_is_false_for_a_check_that_fails_raises_or_hangs() -> None:
    async def ok() -> bool:
        return True

    async def no() -> bool:
        return False

    async def boom() -> bool:
        raise OSError("refused")

    async def hangs() -> bool:
        await asyncio.sleep(30)
        return True

    started = time.monotonic()
    got = await readiness({"a": ok, "b": no, "c": boom, "d": hangs}, timeout_s=0.3)
    assert got == {"a": True, "b": False, "c": False, "d": False}
    assert time.monotonic() - started < 2  # side by side, bounded


async def test_database_check_runs_off_the_loop_one_probe_at_a_time() -> None:
    assert await readiness({"db": database_check(create_engine("sqlite://"))}) == {"db": True}

    release = threading.Event()
    connects = 0

    def hung_connect() -> sqlite3.Connection:
        nonlocal connects
        connects += 1
        release.wait(10)
        return sqlite3.connect(":memory:")

    check = database_check(create_engine("sqlite://", creator=hung_connect))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(ticker())
    try:
        assert await readiness({"db": check}, timeout_s=0.3) == {"db": False}
        assert await readiness({"db": check}, timeout_s=0.3) == {"db": False}
        assert ticks > 20, "the event loop ran while the database hung"
        assert connects == 1, "a hung probe is awaited again, not joined by another thread"
        release.set()
        await asyncio.sleep(0.2)
        assert await readiness({"db": check}, timeout_s=2) == {"db": True}
    finally:
        release.set()
        beat.cancel()


async def test_health_port_serves_healthz_readyz_and_metrics_on_any_free_port() -> None:
    state = {"opa": True}

    async def ready() -> dict[str, bool]:
        return {"kafka": True, "opa": state["opa"]}

    async with running_health("127.0.0.1", 0, ready) as port, httpx.AsyncClient() as client:
        assert port > 0
        base = f"http://127.0.0.1:{port}"
        alive = await client.get(f"{base}/healthz")
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
        good = await client.get(f"{base}/readyz")
        assert (good.status_code, good.json()) == (
            200,
            {"ready": True, "checks": {"kafka": True, "opa": True}},
        )
        state["opa"] = False
        bad = await client.get(f"{base}/readyz")
        assert (bad.status_code, bad.json()) == (
            503,
            {"ready": False, "checks": {"kafka": True, "opa": False}},
        )
        scraped = await client.get(f"{base}/metrics")
        assert scraped.status_code == 200
        names = {f.name for f in text_string_to_metric_families(scraped.text)}
        assert {"accord_relay_events", "accord_opa_request_seconds", "accord_sink_records"} <= names
        assert (await client.get(f"{base}/anything-else")).status_code == 404
    with pytest.raises(httpx.ConnectError):  # stopped on exit
        async with httpx.AsyncClient() as client:
            await client.get(f"{base}/healthz")


def test_verifying_the_audit_chain_sets_its_status_gauge(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    sessions = store.with_appender(make_sessionmaker(engine), APPENDER)
    fill(sessions, 3)
    started = time.time()
    assert store.verify_database(sessions, [], KEY.verify_key, APPENDER.verify_key).ok
    assert sample("accord_audit_chain_ok") == 1
    assert sample("accord_audit_chain_verified_timestamp_seconds") >= int(started)
    with transaction(sessions) as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(record="{}"))
    assert not store.verify_database(sessions, [], KEY.verify_key, APPENDER.verify_key).ok
    assert sample("accord_audit_chain_ok") == 0
    engine.dispose()


async def test_a_poll_tallies_dead_letters_decisions_and_deliveries_per_partition(
    schemas: SchemaRegistry,
) -> None:
    tp = TopicPartition("in", 2)
    batch = {tp: [Msg(7, b"\x00garbage"), Msg(8, event(8))]}
    results = await relay(RecordingPolicy(), schemas).process(cast(Any, batch), SNAPSHOT)
    tally = results[tp].tally
    assert tally.relayed == 1
    assert tally.dead_letters == {"malformed": 1}
    assert tally.decisions == {("allow", "shelter"): 1, ("allow", "health"): 1}
    assert tally.deliveries == {"shelter": 1, "health": 1}


def test_a_held_batch_is_held_until_delivered_or_its_partitions_are_gone(
    schemas: SchemaRegistry,
) -> None:
    r = relay(RecordingPolicy(), schemas)
    tp = TopicPartition("in", 0)
    consumer = StandInConsumer({tp})
    before = sample("accord_relay_held_batches_total", cause="opa_unavailable")
    r._hold(cast(Any, consumer), cast(Any, {tp: [Msg(5, b"")]}), PolicyUnavailable("down"))
    assert consumer.seeks == [(tp, 5)]  # rewound
    assert r.held_cause == "opa_unavailable" and sample("accord_relay_holding") == 1
    assert sample("accord_relay_held_batches_total", cause="opa_unavailable") - before == 1
    r._release(unless_assigned={tp})  # an empty poll while the partition is still ours
    assert r.held_cause == "opa_unavailable" and sample("accord_relay_holding") == 1
    r._release(unless_assigned={TopicPartition("in", 1)})  # it went to another instance
    assert r.held_cause is None and sample("accord_relay_holding") == 0
    r._hold(cast(Any, consumer), cast(Any, {tp: [Msg(5, b"")]}), ViewUnavailable("stale"))
    assert r.held_cause == "consents_unavailable"
    r._release()  # a poll delivered
    assert r.held_cause is None and sample("accord_relay_holding") == 0


def test_every_metric_and_label_is_documented() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from services.settings import REPO_ROOT

    doc = (REPO_ROOT / "docs" / "operations.md").read_text()
    defined = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(defined) == 28  # a new metric: add it to docs/operations.md and here
    for m in defined:
        name = m._name + ("_total" if m._type == "counter" else "")
        assert f"| `{name}` |" in doc, name
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{name}` |"))
        for label in m._labelnames:
            assert f"`{label}`" in row, (name, label)
