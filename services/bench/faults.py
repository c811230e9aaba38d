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
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services import kafka_client
from services.bench.harness import (
    RelayProcess,
    Tally,
    check,
    recompute,
    scoped,
    supervised,
    table,
)
from services.bench.scenario import Scenario, prepare_database, prepare_topics, run_tag
from services.broker.survivor_keys import seal_all, subject_of
from services.devstack import kafka, opa, postgres
from services.devstack.process import stop
from services.settings import Settings

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Params:
    events: int = 1500
    rate: float = 100.0  # events per second offered
    outage_s: float = 10.0  # how long OPA and PostgreSQL stay down
    seed: int | None = None
    keep: bool = False  # keep the temporary directory (logs) afterwards


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class PrivateStack:
    """Kafka, OPA and PostgreSQL of this suite alone, under ``root``."""

    s: Settings
    database_url: str = ""

    @classmethod
    def under(cls, root: Path) -> PrivateStack:
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
            }
        )
        return cls(s)

    def up(self) -> list[str]:
        self.s.state_dir.mkdir(parents=True, exist_ok=True)
        lines = [postgres.up(self.s), opa.up(self.s), kafka.up(self.s)]
        self.database_url = postgres.url(self.s)
        return lines

    def down(self) -> None:
        for proc in (kafka.managed(self.s), opa.managed(self.s), postgres.managed(self.s)):
            stop(proc)


async def publish(
    s: Settings, events: list[bytes], rate: float, sent: list[bytes], *, retry_s: float = 0.5
) -> None:
    """Offer ``rate`` events a second; an event whose send fails is sent again until it is
    acknowledged (the relay's replay guard refuses a second copy), so all are sent in the end."""
    producer = AIOKafkaProducer(
        **kafka_client.kafka(s, kafka_client.ADMIN).kwargs(), acks="all", enable_idempotence=True
    )
    # Sealed up front: the survivors' keys are read from PostgreSQL, which a fault may stop.
    records = seal_all(s, events)
    await producer.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
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


Fault = Callable[["Run"], Awaitable[None]]


@dataclass
class Run:
    stack: PrivateStack
    relay: RelayProcess
    rng: random.Random
    params: Params
    echo: Echo


async def kill_relay(run: Run) -> None:
    for _ in range(3):
        await asyncio.sleep(run.rng.uniform(1.5, 4.0))
        run.relay.supervise = False
        run.relay.kill()
        await asyncio.sleep(run.rng.uniform(0.0, 1.0))
        run.relay.start()
        run.relay.supervise = True


async def restart_kafka(run: Run) -> None:
    await asyncio.sleep(run.rng.uniform(3.0, 5.0))
    started = time.monotonic()
    await asyncio.to_thread(stop, kafka.managed(run.stack.s))
    await asyncio.sleep(2)
    await asyncio.to_thread(kafka.up, run.stack.s)
    run.echo(f"  broker down and back in {time.monotonic() - started:.1f} s")


async def stop_opa(run: Run) -> None:
    await asyncio.sleep(run.rng.uniform(3.0, 5.0))
    await asyncio.to_thread(stop, opa.managed(run.stack.s))
    await asyncio.sleep(run.params.outage_s)
    await asyncio.to_thread(opa.up, run.stack.s)


async def stop_postgres(run: Run) -> None:
    await asyncio.sleep(run.rng.uniform(3.0, 5.0))
    await asyncio.to_thread(stop, postgres.managed(run.stack.s))
    await asyncio.sleep(run.params.outage_s)
    await asyncio.to_thread(postgres.up, run.stack.s)


FAULTS: tuple[tuple[str, Fault], ...] = (
    ("relay SIGKILL ×3", kill_relay),
    ("kafka broker restart", restart_kafka),
    ("OPA stopped", stop_opa),
    ("PostgreSQL stopped", stop_postgres),
)


async def one_fault(
    name: str,
    fault: Fault,
    stack: PrivateStack,
    scenario: Scenario,
    p: Params,
    workdir: Path,
    rng: random.Random,
    echo: Echo,
) -> tuple[Tally, int]:
    tag = run_tag("faults")
    s = scenario.relay_settings(
        scoped(
            stack.s,
            tag,
            database_url=stack.database_url,
            opa_timeout_s=1.5,
            relay_retry_max_s=1.0,
        )
    )
    await prepare_topics(s, scenario)
    events = [scenario.event(n) for n in range(p.events)]
    sent: list[bytes] = []
    echo(f"{name}: {p.events} events at {p.rate:.0f}/s …")
    relay = RelayProcess(s, workdir / f"{tag}.relay.log")
    relay.start()
    try:
        async with supervised(relay) as exits:
            publishing = asyncio.create_task(publish(s, events, p.rate, sent))
            await fault(Run(stack, relay, rng, p, echo))
            await publishing
            expected = await recompute(s, sent, scenario.consents)
            tally, _, _ = await check(
                s, expected, scenario.partner_ids, scenario.opener, sent=len(sent)
            )
    finally:
        relay.stop()
    for line in tally.examples:
        echo(f"  {line}")
    return tally, len(exits)


async def suite(p: Params, echo: Echo, root: Path) -> list[tuple[str, Tally, int]]:
    rng = random.Random(p.seed)  # noqa: S311 - fault timing, not a secret
    stack = PrivateStack.under(root)
    try:
        for line in await asyncio.to_thread(stack.up):
            echo(f"private {line}")
        scenario = Scenario()
        await asyncio.to_thread(prepare_database, stack.database_url, scenario)
        rows = []
        for name, fault in FAULTS:
            tally, restarts = await one_fault(name, fault, stack, scenario, p, root, rng, echo)
            rows.append((name, tally, restarts))
        return rows
    finally:
        await asyncio.to_thread(stack.down)


def run(p: Params, echo: Echo) -> bool:
    """Run every fault; print the table; True if nothing was lost, duplicated or undecided."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # outages are the point here
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="accord-faults-"))
    rows = asyncio.run(suite(p, echo, root))
    lines = table([(name, t) for name, t, _ in rows])
    echo(lines[0] + f"{'restarts':>11}")
    for line, (_, _, restarts) in zip(lines[1:], rows, strict=True):
        echo(line + f"{restarts:>11}")
    echo(f"{len(rows)} faults in {time.monotonic() - started:.0f} s; logs under {root}")
    if not p.keep:
        shutil.rmtree(root, ignore_errors=True)
    return all(t.ok for _, t, _ in rows)
