"""``accord bench api``: does the API stay responsive while the relay runs flat out?

For each number of subscribed partners (20, then 80 by default), on topics and a database of
its own (``accord_bench_api``, emptied first), it starts the real processes: ``accord api``,
``accord relay`` and ``accord sink`` (with the scenario of ``accord bench relay``: partners of
mixed types, half the survivors with consent, signed and sealed events). It times, one request
at a time and in turn, three operations:

- consent list: ``GET /v1/survivors/{id}/consents`` (an advocate);
- preview: ``POST /v1/survivors/{id}/preview`` (the policy asked through OPA);
- publish: ``POST /v1/events`` (a signed event, sealed and written to Kafka);

first idle (relay and sink running, nothing to relay), then loaded: the inbound topic is kept
topped up so that the relay never runs out of work, and the sink worker chains every decision.
It prints p50/p99 of each, the loaded/idle ratio, and whether p99 stays within the target
(100 ms) under load.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.auth.principals import Role
from services.auth.service import issue_credential
from services.broker.survivor_keys import EventSealer, subject_of
from services.db import make_engine, make_sessionmaker, transaction
from services.devstack import postgres
from services.kafka import client as kafka_client
from services.settings import Settings
from tools.bench.harness import RelayProcess, free_ports, log_entries, scoped
from tools.bench.relay_bench import committed, percentiles
from tools.bench.scenario import (
    AGENCY,
    EVENT_TYPE,
    Scenario,
    prepare_database,
    prepare_topics,
    run_tag,
)

BENCH_API_DATABASE = "accord_bench_api"
SURVIVOR = "sv-bench-api"
OPS = ("consent list", "preview", "publish")
Echo = Callable[[str], None]


@dataclass(frozen=True)
class Params:
    partners: tuple[int, ...] = (20, 80)
    requests: int = 150  # per operation, idle and loaded
    survivors: int = 200
    payload_bytes: int = 1000
    backlog: int = 600  # inbound events kept waiting for the relay while loaded
    target_ms: float = 100.0


@dataclass
class Phase:
    """Milliseconds per operation, and what the relay did meanwhile."""

    ms: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPS})
    relayed_eps: float = 0.0
    least_waiting: int | None = None  # the smallest inbound backlog seen (0: it ran dry)
    held: Counter[str] = field(default_factory=Counter)  # batches the relay held, by cause

    def p(self, op: str) -> tuple[float, float]:
        p50, _, p99 = percentiles(self.ms[op])
        return p50, p99


@dataclass
class Run:
    partners: int
    idle: Phase
    loaded: Phase


def relay_log(log: Path) -> tuple[int, Counter[str]]:
    """Events relayed so far, and batches held by cause, from the relay's JSON log."""
    events, held = 0, Counter[str]()
    for entry in log_entries(log):
        if entry.get("msg") == "batch relayed":
            events += int(entry.get("events", 0))
        elif entry.get("msg") == "batch held":
            held[str(entry.get("cause"))] += 1
    return events, held


def reset_database(url: str) -> None:
    """The bench's own database, emptied: each run registers exactly its partners."""
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def credentials(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return {
                "agency": issue_credential(session=session, role=Role.AGENCY, subject=AGENCY),
                "advocate": issue_credential(
                    session=session, role=Role.ADVOCATE, subject="bench-advocate", agency_id=AGENCY
                ),
            }
    finally:
        engine.dispose()


CONSENT = {
    "provisions": [
        {
            "type": "permit",
            "recipients": {"partners": [], "partner_types": ["shelter", "health"]},
            "purposes": ["*"],
            "categories": ["*"],
            "period": {"start": "2026-01-01T00:00:00Z", "end": None},
        }
    ],
    "evidence": {"kind": "form_reference", "reference": "bench form"},
}


class Operations:
    """The three timed requests, as their callers make them."""

    def __init__(
        self, http: httpx.AsyncClient, keys: dict[str, str], scenario: Scenario, requests: int
    ) -> None:
        self._http = http
        self._advocate = {"Authorization": f"Bearer {keys['advocate']}"}
        self._agency = {
            "Authorization": f"Bearer {keys['agency']}",
            "Content-Type": "application/cloudevents+json",
        }
        self._preview = {"partner_id": scenario.partner_ids[1], "event_type": EVENT_TYPE}
        # Signed before the clock starts, as an agency would; ids apart from the load's.
        own = replace(scenario, seed=scenario.seed + 1)
        self._events = iter([own.event(10_000_000 + n) for n in range(requests)])

    async def setup(self) -> None:
        r = await self._http.post(
            "/v1/survivors", json={"survivor_id": SURVIVOR}, headers=self._advocate
        )
        r.raise_for_status()
        r = await self._http.post(
            f"/v1/survivors/{SURVIVOR}/consents", json=CONSENT, headers=self._advocate
        )
        r.raise_for_status()

    def calls(self) -> dict[str, Callable[[], Awaitable[httpx.Response]]]:
        return {
            "consent list": self.consent_list,
            "preview": self.preview,
            "publish": self.publish,
        }

    async def consent_list(self) -> httpx.Response:
        return await self._http.get(f"/v1/survivors/{SURVIVOR}/consents", headers=self._advocate)

    async def preview(self) -> httpx.Response:
        return await self._http.post(
            f"/v1/survivors/{SURVIVOR}/preview", json=self._preview, headers=self._advocate
        )

    async def publish(self) -> httpx.Response:
        body = next(self._events)
        return await self._http.post("/v1/events", content=body, headers=self._agency)


async def time_requests(ops: Operations, n: int, phase: Phase, label: str, echo: Echo) -> None:
    """``n`` rounds of the three operations, one request at a time."""
    calls = ops.calls()
    every = max(1, n // 5)
    for i in range(n):
        for op, call in calls.items():
            started = time.perf_counter()
            r = await call()
            phase.ms[op].append((time.perf_counter() - started) * 1000)
            if r.status_code >= 300:
                raise RuntimeError(f"{op} answered {r.status_code} during the bench")
        if (i + 1) % every == 0:
            echo(f"    {label}: {i + 1}/{n} rounds")


class Load:
    """Keeps the relay's inbound backlog (the topic's end less the relay group's committed
    offsets) at about ``backlog`` events, so that it never runs dry."""

    def __init__(self, s: Settings, scenario: Scenario, backlog: int) -> None:
        self._s = s
        self._scenario = scenario
        self._backlog = backlog
        self.produced = 0
        self.least_waiting: int | None = None

    def _events(self, sealer: EventSealer, first: int, n: int) -> list[bytes]:
        return [sealer(self._scenario.event(first + i)) for i in range(n)]

    async def run(self, stop: asyncio.Event, started: asyncio.Event) -> None:
        conn = kafka_client.kafka(self._s, kafka_client.ADMIN)
        producer = AIOKafkaProducer(**conn.kwargs(), acks="all", linger_ms=20)
        admin = AIOKafkaAdminClient(**conn.kwargs())
        ends = AIOKafkaConsumer(**conn.kwargs(), isolation_level="read_committed")
        await producer.start()
        await admin.start()
        await ends.start()
        sealer = EventSealer.for_settings(self._s)
        tps = [TopicPartition(self._s.topic_inbound, p) for p in range(self._s.inbound_partitions)]
        try:
            while not stop.is_set():
                end = sum((await ends.end_offsets(tps)).values())
                waiting = end - await committed(admin, self._s.relay_group)
                if started.is_set():
                    least = self.least_waiting
                    self.least_waiting = waiting if least is None else min(least, waiting)
                if waiting < self._backlog:
                    # Made and sealed in a thread: the timed requests share this loop.
                    values = await asyncio.to_thread(self._events, sealer, self.produced, 100)
                    for value in values:
                        await producer.send(self._s.topic_inbound, value, key=subject_of(value))
                    await producer.flush()
                    self.produced += len(values)
                    continue
                await asyncio.sleep(0.1)
        finally:
            sealer.close()
            await producer.stop()
            await admin.close()
            await ends.stop()


async def wait_for_api(base: str, api: RelayProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base, timeout=2) as http:
        while time.monotonic() < deadline:
            if not api.alive():
                raise RuntimeError("accord api exited at start; see its log")
            try:
                if (await http.get("/openapi.json")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("accord api did not answer in time")


async def measure(base: Settings, url: str, p: Params, partners: int, echo: Echo) -> Run:
    scenario = Scenario(survivors=p.survivors, payload_bytes=p.payload_bytes, partners=partners)
    await asyncio.to_thread(reset_database, url)
    await asyncio.to_thread(prepare_database, url, scenario)
    keys = await asyncio.to_thread(credentials, url)
    s = scenario.relay_settings(scoped(base, run_tag("bench-api"), database_url=url))
    s = s.model_copy(update={"api_port": free_ports(1)[0]})
    echo(f"{partners} partners subscribed: topics, ACLs and {p.survivors} survivors' consents")
    await prepare_topics(s, scenario)
    env = {"ACCORD_API_PORT": str(s.api_port), "ACCORD_API_HOST": s.api_host}
    with tempfile.TemporaryDirectory(prefix="accord-bench-api-") as tmp:
        logs = Path(tmp)
        processes = [
            RelayProcess(s, logs / f"{name}.log", command=name, env=env)
            for name in ("relay", "sink", "api")
        ]
        for proc in processes:
            proc.start()
        try:
            base_url = f"http://{s.api_host}:{s.api_port}"
            await wait_for_api(base_url, processes[2])
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
                ops = Operations(http, keys, scenario, 2 * p.requests)
                await ops.setup()
                idle = Phase()
                echo("  idle: relay and sink running, nothing to relay")
                await time_requests(ops, p.requests, idle, "idle", echo)
                loaded = await measure_loaded(s, scenario, ops, p, logs / "relay.log", echo)
        finally:
            for proc in processes:
                proc.stop()
    return Run(partners, idle, loaded)


async def measure_loaded(
    s: Settings, scenario: Scenario, ops: Operations, p: Params, log: Path, echo: Echo
) -> Phase:
    load = Load(s, scenario, p.backlog)
    stop, started = asyncio.Event(), asyncio.Event()
    feeder = asyncio.create_task(load.run(stop, started))
    admin = AIOKafkaAdminClient(**kafka_client.kafka(s, kafka_client.ADMIN).kwargs())
    await admin.start()
    phase = Phase()
    try:
        echo(
            f"  loaded: {p.backlog} events kept waiting for the relay ({scenario.partners} "
            "decisions each, chained by the sink)"
        )
        deadline = time.monotonic() + 120
        while await committed(admin, s.relay_group) == 0:  # the relay is at work
            if feeder.done():
                feeder.result()
            if time.monotonic() > deadline:
                raise RuntimeError("the relay relayed nothing within 120 s; see its log")
            await asyncio.sleep(0.2)
        started.set()
        (first, held), t0 = relay_log(log), time.monotonic()
        await time_requests(ops, p.requests, phase, "loaded", echo)
        (last, held_after), t1 = relay_log(log), time.monotonic()
        phase.relayed_eps = (last - first) / (t1 - t0)
        phase.held = held_after - held
    finally:
        stop.set()
        await feeder
        await admin.close()
    phase.least_waiting = load.least_waiting
    return phase


def report(runs: list[Run], target_ms: float) -> list[str]:
    lines = [
        f"{'partners':>8}  {'operation':<13}{'idle p50':>10}{'idle p99':>10}"
        f"{'loaded p50':>12}{'loaded p99':>12}{'p50 ×':>8}{'p99 ×':>8}  p99 ≤ {target_ms:.0f} ms"
    ]
    for run in runs:
        for op in OPS:
            i50, i99 = run.idle.p(op)
            l50, l99 = run.loaded.p(op)
            verdict = "yes" if l99 <= target_ms else "NO"
            lines.append(
                f"{run.partners:>8}  {op:<13}{i50:>8.1f}ms{i99:>8.1f}ms{l50:>10.1f}ms{l99:>10.1f}ms"
                f"{l50 / i50:>8.1f}{l99 / i99:>8.1f}  {verdict}"
            )
        lines.append(
            f"{'':>8}  relay meanwhile: {run.loaded.relayed_eps:.0f} events/s, "
            f"{run.loaded.relayed_eps * run.partners:.0f} decisions/s"
            + f", inbound backlog never below {run.loaded.least_waiting} events"
            + (f"; batches held: {dict(run.loaded.held)}" if run.loaded.held else "; no batch held")
        )
    met = all(run.loaded.p(op)[1] <= target_ms for run in runs for op in OPS)
    lines.append(
        f"target p99 ≤ {target_ms:.0f} ms under load: {'met' if met else 'NOT met'} "
        "(× = loaded / idle)"
    )
    return lines


async def bench(p: Params, echo: Echo) -> list[Run]:
    base = Settings()
    await asyncio.to_thread(postgres.ensure_database, base, BENCH_API_DATABASE)
    url = postgres.url(base, BENCH_API_DATABASE)
    echo(
        f"accord bench api: {p.requests} requests per operation, idle and while the relay "
        f"runs flat out, with {' then '.join(map(str, p.partners))} partners subscribed"
    )
    runs = [await measure(base, url, p, n, echo) for n in p.partners]
    for line in report(runs, p.target_ms):
        echo(line)
    return runs


def run(p: Params, echo: Echo) -> list[Run]:
    return asyncio.run(bench(p, echo))
