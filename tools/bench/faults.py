"""``accord faults``: exactly once under faults, each injected during a steady stream of events.

A private Kafka broker (KRaft, one node, its own ports and formatted storage), a private OPA
server and a private PostgreSQL cluster are started in a temporary directory from the cached
jars and binaries (never the shared stack's), and the relay runs as a real ``accord relay``
process against them, supervised: started again whenever it exits, as systemd or Kubernetes
would. For each fault, with topics and a group of its own:

- ``relay SIGKILL ×3``: the relay process is SIGKILLed at three random moments;
- ``kafka broker restart``: the broker is stopped (SIGTERM) and started again;
- ``OPA stopped``: the OPA server is stopped for a while, then started again;
- ``PostgreSQL stopped``: the database (the partner registry) is stopped, then started again.

Afterwards the decision topic and every partner topic are read from the beginning
(read_committed) and compared with the decisions recomputed from scratch by an in-process
relay: the table says, per fault, events sent, decision records, deliveries, and the
duplicated, lost, undecided and wrong ones; the command exits 1 unless those are all 0.

While a fault runs, a line every few seconds says how many events were sent and relayed (the
relay group's committed offsets) and how often the relay was restarted. A fault whose relay
keeps restarting (or stays still) without committing anything new is stopped with the relay's
last error line and fails the run. The private servers are stopped on every way out: success,
failure, timeout, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from services.broker.survivor_keys import seal_all, subject_of
from services.devstack import kafka, opa, postgres
from services.devstack.process import Managed, Steps, stop
from services.kafka import client as kafka_client
from services.settings import Settings
from tools.bench.harness import (
    RelayProcess,
    Tally,
    check,
    free_ports,
    recompute,
    scoped,
    supervised,
    table,
)
from tools.bench.scenario import Scenario, prepare_database, prepare_topics, run_tag

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Params:
    events: int = 1500
    rate: float = 100.0  # events per second offered
    outage_s: float = 10.0  # how long OPA and PostgreSQL stay down
    seed: int | None = None
    keep: bool = False  # keep the temporary directory (logs) afterwards
    progress_s: float = 10.0  # a progress line this often
    # A fault is stalled after this many relay restarts, or this long, without a new commit.
    stall_restarts: int = 5
    stall_s: float = 120.0
    fault_timeout_s: float = 300.0  # from the first event to the last one committed
    # The whole run, CI's share of its 45 minutes: a fault still relaying when it is spent
    # fails, and those not started are reported as not run (each read-back adds < 5 min).
    budget_s: float = 690.0


# name → (start it and wait for health, its pid and log files); started in this order.
SERVICES: dict[str, tuple[Callable[[Settings, Steps], str], Callable[[Settings], Managed]]] = {
    "postgres": (postgres.up, postgres.managed),
    "opa": (opa.up, opa.managed),
    "kafka": (kafka.up, kafka.managed),
}


@dataclass
class PrivateStack:
    """Kafka, OPA and PostgreSQL of this suite alone, under ``root``.

    Starts and stops are serialised by a lock, and nothing starts once ``down`` began: a start
    still running in a worker thread when the suite is interrupted finishes first, and is then
    stopped with the rest, instead of leaving a server behind."""

    s: Settings
    echo: Echo
    database_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    @classmethod
    def under(cls, root: Path, echo: Echo) -> PrivateStack:
        root.chmod(0o755)  # PostgreSQL runs as the postgres account when we are root
        ports = free_ports(4)
        s = Settings().model_copy(
            update={
                "state_dir": root / "stack",
                "kafka_port": ports[0],
                "kafka_controller_port": ports[1],
                "opa_port": ports[2],
                "postgres_port": ports[3],
                "kafka_bootstrap": "",
                "opa_url": "",
                "database_url": "",
                # Keys of this stack alone, handed to the relay (harness.relay_env).
                "keks": "",
                "kek_active": "",
                "relay_private_key": "",
                "audit_appender_key": "",
            }
        )
        return cls(s, echo)

    def managed(self, name: str) -> Managed:
        return SERVICES[name][1](self.s)

    def start(self, name: str) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the private stack is stopped")
            started = time.monotonic()
            line = SERVICES[name][0](self.s, Steps(self.echo, prefix="    "))
            self.echo(f"  private {line} in {time.monotonic() - started:.1f} s")

    def stop(self, name: str) -> None:
        with self._lock:
            stop(self.managed(name))

    def up(self) -> None:
        self.s.state_dir.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            self.echo(f"  starting the private {name} …")
            self.start(name)
        self.database_url = postgres.url(self.s)

    def ensure_up(self) -> None:
        for name in SERVICES:
            self.start(name)

    def down(self) -> list[str]:
        """Stop every private server that runs; say which."""
        with self._lock:
            self._closed = True
            return [name for name in reversed(SERVICES) if stop(self.managed(name))]


async def publish(
    s: Settings, events: list[bytes], rate: float, sent: list[bytes], *, retry_s: float = 0.5
) -> None:
    """Offer ``rate`` events a second; an event whose send fails is sent again until it is
    acknowledged (the relay's replay guard refuses a second copy), so all are sent in the end."""
    # Sealed up front: the survivors' keys are read from PostgreSQL, which a fault may stop.
    records = seal_all(s, events)
    producer = AIOKafkaProducer(
        **kafka_client.kafka(s, kafka_client.ADMIN).kwargs(), acks="all", enable_idempotence=True
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        await producer.start()
        for n, (value, record) in enumerate(zip(events, records, strict=True)):
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            while True:
                try:
                    await producer.send_and_wait(s.topic_inbound, record, key=subject_of(value))
                    break
                except KafkaError:
                    await asyncio.sleep(retry_s)
            sent.append(value)
    finally:
        await producer.stop()


# The last line of a Python traceback ("Unreadable: a wrapped data key does not open ...").
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*: \S")


def last_error(log: Path, *, tail_bytes: int = 256 * 1024) -> str:
    """The relay's last trouble in its log: a JSON line at level warning or above (a held
    batch says its cause there), or the last line of a traceback, whichever came last."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - tail_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(the relay wrote no log)"
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("level") in ("warning", "error", "critical"):
                why = ", ".join(str(doc[k]) for k in ("error", "cause") if doc.get(k))
                return f"{doc.get('logger', '?')}: {doc.get('msg', '')}" + (
                    f" ({why})" if why else ""
                )
        elif _EXCEPTION_LINE.match(line):
            return line.strip()
    return "(no error in the relay's log)"


@dataclass
class StallWatch:
    """Pure: decides when the relay makes no progress. Progress is a new commit; restarts or
    time without one while events wait are a stall."""

    max_restarts: int
    max_idle_s: float
    _best: int = -1
    _restarts_at: int = 0
    _since: float = 0.0

    def observe(self, now: float, *, relayed: int, restarts: int, waiting: bool) -> str | None:
        """The reason the relay is stalled, or None."""
        if relayed > self._best or not waiting:
            self._best = max(self._best, relayed)
            self._restarts_at, self._since = restarts, now
            return None
        if restarts - self._restarts_at >= self.max_restarts:
            return f"{restarts - self._restarts_at} relay restarts without a new commit"
        if now - self._since >= self.max_idle_s:
            return f"no new commit for {now - self._since:.0f} s"
        return None


class Stalled(Exception):
    """The relay makes no progress; the message says why and what it last logged."""


@dataclass
class Counts:
    """What a fault's watcher last saw: events relayed (committed) and in the inbound topic."""

    relayed: int = 0
    inbound: int = 0
    updated: asyncio.Condition = field(default_factory=asyncio.Condition)


class Offsets:
    """The relay group's committed offsets and the inbound topic's end offsets, summed.

    Read as the super user through clients started on first use and started again after a
    failure: the broker going away is one of the faults."""

    def __init__(self, s: Settings) -> None:
        self._s = s
        self._conn = kafka_client.kafka(s, kafka_client.ADMIN)
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(**self._conn.kwargs(), request_timeout_ms=10_000)
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**self._conn.kwargs(), enable_auto_commit=False)
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._admin, self._consumer

    async def read(self) -> tuple[int, int] | None:
        """(relayed, inbound), or None while the broker does not answer."""
        s = self._s
        tps = [TopicPartition(s.topic_inbound, p) for p in range(s.inbound_partitions)]
        try:
            admin, consumer = await self._clients()
            offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(s.relay_group), 10)
            ends = await asyncio.wait_for(consumer.end_offsets(tps), 10)
        except (KafkaError, TimeoutError, OSError):
            return None
        return sum(max(o.offset, 0) for o in offsets.values()), sum(ends.values())

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()


async def watch(
    s: Settings,
    name: str,
    relay: RelayProcess,
    exits: list[int],
    sent: list[bytes],
    p: Params,
    echo: Echo,
    counts: Counts,
    deadline: float,
) -> None:
    """Print progress every ``p.progress_s``; raise ``Stalled`` when the relay is stuck or
    ``deadline`` (time.monotonic) passes."""
    offsets = Offsets(s)
    loop = asyncio.get_running_loop()
    started = next_line = loop.time()
    stall = StallWatch(p.stall_restarts, p.stall_s)
    try:
        while True:
            await asyncio.sleep(1.0)
            read = await offsets.read()
            if read is not None:
                counts.relayed, counts.inbound = read
                async with counts.updated:
                    counts.updated.notify_all()
            now = loop.time()
            waiting = counts.relayed < max(counts.inbound, len(sent))
            reason = stall.observe(
                now, relayed=counts.relayed, restarts=len(exits), waiting=waiting
            )
            if reason is None and now - started > p.fault_timeout_s:
                reason = f"not all relayed within {p.fault_timeout_s:.0f} s"
            if reason is None and time.monotonic() > deadline:
                reason = f"the suite's {p.budget_s:.0f} s are spent"
            if reason is not None:
                raise Stalled(f"{reason}; the relay's last error: {last_error(relay.log_file)}")
            if now >= next_line:
                next_line = now + p.progress_s
                echo(
                    f"  {name}: {now - started:4.0f} s, sent {len(sent)}/{p.events}, "
                    f"relayed {counts.relayed}, relay restarts {len(exits)}"
                )
    finally:
        await offsets.close()


Fault = Callable[["Run"], Awaitable[None]]


@dataclass
class Run:
    stack: PrivateStack
    relay: RelayProcess
    rng: random.Random
    params: Params
    echo: Echo
    counts: Counts

    async def relaying(self, *, beyond: int = 0) -> int:
        """Wait until the relay committed more than ``beyond`` events (or all of them), so that
        a fault lands while it relays (a loaded machine takes many seconds to start one)."""
        counts, total = self.counts, self.params.events
        async with counts.updated:
            await counts.updated.wait_for(
                lambda: counts.relayed > beyond or counts.relayed >= total
            )
        return counts.relayed


async def kill_relay(run: Run) -> None:
    relayed = 0
    for n in range(1, 4):
        relayed = await run.relaying(beyond=relayed)  # each kill after new progress
        await asyncio.sleep(run.rng.uniform(0.5, 3.0))
        if run.counts.relayed >= run.params.events:
            run.echo(f"  kill {n} of 3 after every event was relayed (a fast relay)")
        run.relay.supervise = False
        run.relay.kill()
        await asyncio.sleep(run.rng.uniform(0.0, 1.0))
        run.relay.start()
        run.relay.supervise = True


async def restart_kafka(run: Run) -> None:
    await run.relaying()
    await asyncio.sleep(run.rng.uniform(0.5, 3.0))
    started = time.monotonic()
    await asyncio.to_thread(run.stack.stop, "kafka")
    await asyncio.sleep(2)
    await asyncio.to_thread(run.stack.start, "kafka")
    run.echo(f"  broker down and back in {time.monotonic() - started:.1f} s")


async def stop_opa(run: Run) -> None:
    await run.relaying()
    await asyncio.sleep(run.rng.uniform(0.5, 3.0))
    await asyncio.to_thread(run.stack.stop, "opa")
    await asyncio.sleep(run.params.outage_s)
    await asyncio.to_thread(run.stack.start, "opa")


async def stop_postgres(run: Run) -> None:
    await run.relaying()
    await asyncio.sleep(run.rng.uniform(0.5, 3.0))
    await asyncio.to_thread(run.stack.stop, "postgres")
    await asyncio.sleep(run.params.outage_s)
    await asyncio.to_thread(run.stack.start, "postgres")


FAULTS: tuple[tuple[str, Fault], ...] = (
    ("relay SIGKILL ×3", kill_relay),
    ("kafka broker restart", restart_kafka),
    ("OPA stopped", stop_opa),
    ("PostgreSQL stopped", stop_postgres),
)


@dataclass
class Row:
    """One fault's outcome: its tally, or why it stalled."""

    name: str
    restarts: int
    tally: Tally | None = None
    stalled: str = ""

    @property
    def ok(self) -> bool:
        return self.tally is not None and self.tally.ok


async def _until_relayed(counts: Counts, sent: list[bytes], watcher: asyncio.Task[None]) -> None:
    """Wait until the relay committed every inbound record (the watcher raises if it stalls)."""
    while not (counts.inbound >= len(sent) and counts.relayed >= counts.inbound):
        if watcher.done():
            watcher.result()
        await asyncio.sleep(0.5)


async def one_fault(
    deadline: float,
    name: str,
    fault: Fault,
    stack: PrivateStack,
    scenario: Scenario,
    p: Params,
    workdir: Path,
    rng: random.Random,
    echo: Echo,
) -> Row:
    tag = run_tag("faults")
    s = scenario.relay_settings(
        scoped(
            stack.s,
            tag,
            database_url=stack.database_url,
            # A stopped OPA refuses connections at once; a timeout only ever fires on a slow
            # one, and 1.5 s held every batch for good on a loaded machine (load 18, 2 cores).
            opa_timeout_s=10.0,
            relay_retry_max_s=1.0,
        )
    )
    await prepare_topics(s, scenario)
    events = [scenario.event(n) for n in range(p.events)]
    sent: list[bytes] = []
    echo(f"{name}: {p.events} events at {p.rate:.0f}/s …")
    relay = RelayProcess(s, workdir / f"{tag}.relay.log")
    relay.start()
    counts = Counts()
    try:
        async with supervised(relay) as exits:
            watcher = asyncio.create_task(
                watch(s, name, relay, exits, sent, p, echo, counts, deadline)
            )
            publishing = asyncio.create_task(publish(s, events, p.rate, sent))
            try:
                await _first_of(watcher, fault(Run(stack, relay, rng, p, echo, counts)))
                await _first_of(watcher, publishing)
                await _until_relayed(counts, sent, watcher)
            except Stalled as exc:
                echo(f"  {name}: STALLED: {exc}")
                # A fault cut short may have left a server stopped: the next fault needs all.
                await asyncio.to_thread(stack.ensure_up)
                return Row(name, len(exits), stalled=str(exc))
            finally:
                for task in (watcher, publishing):
                    task.cancel()
                await asyncio.gather(watcher, publishing, return_exceptions=True)
            echo(
                f"  {name}: all {len(sent)} relayed; reading back the decision and partner topics …"
            )
            expected = await recompute(s, sent, scenario.consents)
            tally, _, _ = await check(
                s,
                expected,
                scenario.partner_ids,
                scenario.opener,
                sent=len(sent),
                timeout_s=60,
                partner_timeout_s=20,
            )
    finally:
        relay.stop()
    for line in tally.examples:
        echo(f"  {line}")
    echo(
        f"  {name}: {'ok' if tally.ok else 'FAILED'}: {tally.decided} decided, "
        f"{tally.delivered} delivered, {tally.duplicated} duplicated, {tally.lost} lost, "
        f"{tally.undecided} undecided, {tally.mismatched} wrong"
    )
    return Row(name, len(exits), tally)


async def _first_of(watcher: asyncio.Task[None], work: Awaitable[None]) -> None:
    """Await ``work``; if the watcher ends first (it raised ``Stalled``), raise that."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({watcher, task}, return_when=asyncio.FIRST_COMPLETED)
        if watcher.done():
            watcher.result()
        await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def suite(
    p: Params, echo: Echo, stack: PrivateStack, root: Path, deadline: float
) -> list[Row]:
    # SIGTERM (a CI timeout, systemd, `kill`) ends the run as Ctrl-C does: every fault's
    # finally runs, then run() stops the private servers.
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, signal.raise_signal, signal.SIGINT
    )
    rng = random.Random(p.seed)  # noqa: S311 - fault timing, not a secret
    scenario = Scenario()
    await asyncio.to_thread(prepare_database, stack.database_url, scenario)
    rows = []
    for name, fault in FAULTS:
        if time.monotonic() > deadline:
            echo(f"{name}: not run, the suite's {p.budget_s:.0f} s are spent")
            rows.append(Row(name, 0, stalled="not run: the time budget was spent"))
            continue
        try:
            row = await one_fault(deadline, name, fault, stack, scenario, p, root, rng, echo)
            rows.append(row)
        except (KafkaError, OSError, RuntimeError, AssertionError) as exc:
            # The suite's own machinery failed (a read-back, the recompute): this fault fails,
            # the others still run. Kafka's, OSError's and our messages carry no event content.
            reason = f"{type(exc).__name__}: {exc}"
            echo(f"  {name}: FAILED: {reason}")
            rows.append(Row(name, 0, stalled=reason))
            await asyncio.to_thread(stack.ensure_up)
    return rows


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _uninterruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored: stopping the private servers must not be cut short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(p: Params, echo: Echo) -> bool:
    """Run every fault; print the table; True if nothing was lost, duplicated or undecided."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # outages are the point here
    started = time.monotonic()
    seed = p.seed if p.seed is not None else random.SystemRandom().randrange(2**32)
    p = Params(**{**p.__dict__, "seed": seed})
    root = Path(tempfile.mkdtemp(prefix="accord-faults-"))
    echo(f"fault suite, seed {seed} (--seed {seed} repeats the timing); logs under {root}")
    stack = PrivateStack.under(root, echo)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    rows: list[Row] = []
    try:
        stack.up()
        rows = asyncio.run(suite(p, echo, stack, root, started + p.budget_s))
    finally:
        with _uninterruptible():
            echo("stopping the private Kafka, OPA and PostgreSQL …")
            stopped = stack.down()
            echo(f"  stopped: {', '.join(stopped) or 'nothing was running'}")
        signal.signal(signal.SIGTERM, previous)
    width = max((len(r.name) for r in rows), default=0)
    lines = table([(r.name, r.tally) for r in rows if r.tally is not None], width=width)
    echo(lines[0] + f"{'restarts':>11}")
    body = iter(lines[1:])
    for r in rows:
        if r.tally is None:
            echo(f"{r.name:<{width}}  FAILED after {r.restarts} restarts: {r.stalled}")
        else:
            echo(next(body) + f"{r.restarts:>11}")
    ok = bool(rows) and all(r.ok for r in rows)
    echo(
        f"{len(rows)} faults in {time.monotonic() - started:.0f} s: {'passed' if ok else 'FAILED'}"
    )
    if not p.keep and ok:
        shutil.rmtree(root, ignore_errors=True)
    else:
        echo(f"logs kept under {root}")
    return ok
