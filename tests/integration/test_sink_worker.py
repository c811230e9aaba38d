"""`accord sink` stores each decision record and each dead letter exactly once, whatever happens
to the worker: SIGKILLed in the middle of the stream and started again, or made to read again
from a point inside a batch it already stored (so one poll holds records stored and new). The
audit chain verifies afterwards. Real Kafka and PostgreSQL; the worker is a real process."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.audit import store
from services.audit.models import AuditEntry
from services.audit.signing import appender_verify_key
from services.broker.edges.models import RejectedEvent
from services.broker.pipeline.deliver import dead_letter_record
from services.broker.pipeline.model import Rejection
from services.db import make_engine, make_sessionmaker
from services.devstack import postgres
from services.kafka import topics
from services.kafka.client import ADMIN, API, AUDIT, kafka
from services.kafka.sink import SinkProgress
from services.runtime import running_sinks
from services.settings import Settings
from services.sink_worker import SinkWorker, audit_group, rejections_group
from tests.support.keys import AUDIT_KEY
from tests.support.stack import free_port, fresh_database, kafka_ready
from tools.bench.harness import RelayProcess, scoped

pytestmark = pytest.mark.integration

DECISIONS = 3000
LETTERS = 1500


@pytest.fixture(scope="module")
def sink_settings(settings: Settings) -> Iterator[Settings]:
    """Topics, groups and a database of this module's own: the chain here holds only these."""
    name = os.environ.get("ACCORD_TEST_DATABASE", "accord_test") + "_sink"
    postgres.ensure_database(settings, name)
    s = scoped(settings, f"{settings.relay_group}-sink-{uuid.uuid4().hex[:6]}")
    s = s.model_copy(update={"database_url": postgres.url(settings, name)})
    fresh_database(s.sqlalchemy_url)
    yield s


@pytest.fixture(scope="module")
def sink_sessions(sink_settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sink_settings.sqlalchemy_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def decision(n: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"evt-sink-{n}",
            "partner_id": f"partner-{n % 7}",
            "partner_type": "shelter",
            "agency_id": "harbor-outreach",
            "event_type": "accord.referral.made",
            "survivor_id": f"sv-sink-{n % 50}",
            "outcome": "deny" if n % 3 else "partial",
            "basis": [],
            "reasons": ["R1"],
            "released": [],
            "withheld": [{"field": "phone", "rules": ["R2"]}],
            "delivery_id": None,
            "decided_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
    ).encode()


def letter(s: Settings, n: int) -> bytes:
    out = dead_letter_record(
        Rejection("malformed", "not a JSON document", agency_id="harbor-outreach"),
        deadletter_topic=s.topic_deadletter,
        topic=s.topic_inbound,
        partition=0,
        offset=n,
    )
    return out.value


@pytest.fixture(scope="module")
async def published(sink_settings: Settings) -> AsyncIterator[Settings]:
    """Every decision record and dead letter of the test, on the module's topics."""
    s = sink_settings
    await kafka_ready(s)
    producer = AIOKafkaProducer(**kafka(s, ADMIN).kwargs(), acks="all", linger_ms=20)
    await producer.start()
    try:
        for n in range(DECISIONS):
            await producer.send(s.topic_decisions, decision(n), key=b"k%d" % (n % 11))
        for n in range(LETTERS):
            await producer.send(s.topic_deadletter, letter(s, n), key=b"harbor-outreach")
        await producer.flush()
    finally:
        await producer.stop()
    yield s


def counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as session:
        entries = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
        letters = session.scalar(select(func.count()).select_from(RejectedEvent)) or 0
    return entries, letters


async def stored_everything(s: Settings, timeout_s: float = 120) -> None:
    """Both of the worker's groups committed the topics' ends (seen as the API sees it)."""
    for topic, group in (
        (s.topic_decisions, audit_group(s)),
        (s.topic_deadletter, rejections_group(s)),
    ):
        # The API may only describe the decision topic; the dead letters' progress is read
        # as the worker's own principal.
        progress = SinkProgress(
            kafka(s, API if topic == s.topic_decisions else AUDIT), topic, group
        )
        await progress.start()
        try:
            await progress.catch_up(timeout_s)
        finally:
            await progress.stop()


async def rewind(s: Settings, topic: str, group: str, offset: int) -> None:
    """As if the worker had died after storing, before committing: its group's committed
    offset set back to ``offset`` on every partition (the worker is stopped)."""
    consumer = AIOKafkaConsumer(**kafka(s, AUDIT).kwargs(), group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topics.partitions(kafka(s, AUDIT), topic)]
        consumer.assign(tps)
        await consumer.commit(dict.fromkeys(tps, offset))
    finally:
        await consumer.stop()


def wait_until(predicate: object, timeout_s: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


async def test_each_record_is_stored_once_across_a_kill_and_a_rewind(
    published: Settings, sink_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    s = published
    worker = RelayProcess(s, tmp_path / "sink.log", command="sink")
    worker.start()
    try:
        # SIGKILL while it is storing: some batches in, more to come.
        await asyncio.to_thread(wait_until, lambda: counts(sink_sessions)[0] > 0, 120)
        worker.kill()
        partial = counts(sink_sessions)
        assert partial[0] < DECISIONS
        worker.start()
        await stored_everything(s)
        assert counts(sink_sessions) == (DECISIONS, LETTERS)
        worker.stop()

        # Read again from inside a stored batch (not at a poll's boundary), then everything
        # from the start: every record of those polls is stored already and filtered out.
        # The last dead letters are lost from the table first, so that one poll holds
        # records stored (which must not fail its transaction) and records to store again.
        for decisions_at, letters_at in ((337, 757), (0, 0)):
            with sink_sessions() as session, session.begin():
                session.execute(delete(RejectedEvent).where(RejectedEvent.inbound_offset >= 1400))
            assert counts(sink_sessions)[1] == 1400
            await rewind(s, s.topic_decisions, audit_group(s), decisions_at)
            await rewind(s, s.topic_deadletter, rejections_group(s), letters_at)
            worker.start()
            await stored_everything(s)
            worker.stop()
            assert counts(sink_sessions) == (DECISIONS, LETTERS)
    finally:
        worker.stop()
    log = (tmp_path / "sink.log").read_text()
    assert "sink batch not stored" not in log, log[-2000:]

    # No checkpointer runs on this module's chain: every entry's link and its appender's
    # signature are checked (nothing is witnessed, so nothing is skipped).
    report = store.verify_database(
        sink_sessions, [], AUDIT_KEY.verify_key, appender_verify_key(published)
    )
    assert report.ok, report
    assert report.entries == DECISIONS


async def test_the_worker_is_ready_with_no_lag_once_it_stored_everything(
    published: Settings, sink_sessions: sessionmaker[Session]
) -> None:
    """The same worker in process (as the integration tests run it), on this module's topics,
    which hold nothing new: ready, nothing behind, nothing stored twice."""
    async with running_sinks(published) as worker:
        await worker.catch_up(timeout_s=60)
        assert await worker.readiness() == {
            "kafka": True,
            "database": True,
            "audit_assigned": True,
            "audit_storing": True,
            "rejections_assigned": True,
            "rejections_storing": True,
        }
        assert worker.lag() == {"audit": 0, "rejections": 0}
        assert worker.stored() == {"audit": 0, "rejections": 0}
    assert counts(sink_sessions) == (DECISIONS, LETTERS)


async def test_the_worker_is_not_ready_without_its_database(published: Settings) -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:9/nothing")
    worker = SinkWorker(published, make_sessionmaker(engine))
    try:
        ready = await worker.readiness(timeout_s=5)
    finally:
        for sink in worker.sinks.values():
            await sink.close()
        engine.dispose()
    assert ready["database"] is False
    assert ready["audit_assigned"] is False and ready["rejections_assigned"] is False


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed with prometheus-client's own parser: (sample name, labels) -> value."""
    text = (await http.get("/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:  # another process's state: nothing to wait on but polling it
            if await check():
                return
            await asyncio.sleep(0.1)


async def test_the_worker_answers_health_readiness_and_metrics_on_its_port(
    published: Settings, sink_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Runs last in the module: every earlier record is stored, so the records counter of a
    fresh `accord sink` moves by exactly the new ones, and the lag comes back to 0."""
    s, port, new = published, free_port(), 25
    before = counts(sink_sessions)
    worker = RelayProcess(
        s, tmp_path / "sink.log", command="sink", env={"ACCORD_SINK_HEALTH_PORT": str(port)}
    )
    worker.start()
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)

    async def alive() -> bool:
        try:
            return bool((await http.get("/healthz")).json() == {"status": "ok"})
        except httpx.HTTPError:
            return False

    async def settled() -> bool:
        m = await scrape(http)
        lags = [v for (name, _), v in m.items() if name == "accord_sink_consumer_lag"]
        stored = m.get(("accord_sink_records_total", (("sink", "audit"),)))
        return stored == new and bool(lags) and not any(lags)

    try:
        await eventually(alive, 60)
        producer = AIOKafkaProducer(**kafka(s, ADMIN).kwargs(), acks="all")
        await producer.start()
        try:
            for n in range(DECISIONS, DECISIONS + new):
                await producer.send(s.topic_decisions, decision(n), key=b"k%d" % (n % 11))
            await producer.flush()
        finally:
            await producer.stop()
        await stored_everything(s)
        assert counts(sink_sessions) == (before[0] + new, before[1])
        await eventually(settled, 30)
        metrics = await scrape(http)
        assert metrics.get(("accord_sink_records_total", (("sink", "rejections"),)), 0) == 0
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["ready"] is True
    finally:
        await http.aclose()
        worker.stop()
