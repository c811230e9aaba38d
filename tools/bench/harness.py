"""Machinery shared by the benchmark, the fault-injection suite and the crash-recovery tests.

- ``scoped``: settings with topics, consumer group and transactional id of their own;
- ``RelayProcess``: a real ``accord relay`` child process that can be SIGKILLed, restarted,
  supervised (started again if it died, as systemd or Kubernetes would) and measured (peak RSS);
- ``publish_steadily``: a steady stream of inbound events, so faults land mid-stream;
- ``read_all``: every committed record of a topic from its beginning;
- ``recompute``: the decisions from scratch, by an in-process relay over the same events,
  consents, registry and policy, without Kafka;
- ``tally``: pure: what the partner topics and the decision topic hold, compared with the
  recomputed decisions: delivered, duplicated, lost, undecided (``check`` does the I/O).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from nacl.public import PrivateKey

from services.atrest.keys import kek_ring
from services.broker.consent_view import StaticConsentView
from services.broker.pipeline.decide import OpaPolicy
from services.broker.pipeline.seal import Sealer
from services.broker.pipeline.validate import SchemaRegistry
from services.broker.registry import SqlRegistry
from services.broker.relay import Relay
from services.broker.replay import StaticSeen
from services.broker.survivor_keys import SqlSurvivorKeys, seal_all, subject_of
from services.db import make_engine, make_sessionmaker
from services.decision_records import split_decisions
from services.kafka import client as kafka_client
from services.kafka import topics
from services.referrals import service as referrals
from services.settings import Settings

JSON = dict[str, Any]
Opener = Callable[[bytes], JSON]


def scoped(s: Settings, tag: str, **update: Any) -> Settings:
    """``s`` with topics, relay group and transactional id of its own (prefix ``tag``)."""
    return s.model_copy(
        update={
            "topic_inbound": f"{tag}.inbound",
            "topic_decisions": f"{tag}.decisions",
            "topic_deadletter": f"{tag}.deadletter",
            "topic_consents": f"{tag}.consents",
            "topic_seen": f"{tag}.seen",
            "partner_topic_prefix": f"{tag}.partner.",
            "relay_group": f"{tag}-relay",
            "relay_transactional_id": f"{tag}-relay-0",
            **update,
        }
    )


RELAY_SETTINGS = (
    "policy_engine",
    "decision_reuse_entries",
    "topic_inbound",
    "topic_decisions",
    "topic_deadletter",
    "topic_consents",
    "topic_seen",
    "partner_topic_prefix",
    "relay_group",
    "relay_transactional_id",
    "database_url",
    # The keys: without them a relay under another state dir makes keys of its own, and every
    # survivor's data key fails to open ("a wrapped data key does not open under its KEK").
    "state_dir",
    "keks",
    "kek_active",
    "relay_private_key",
    "audit_appender_key",
    "opa_timeout_s",
    "opa_urls",
    "opa_failover_cooldown_s",
    "opa_batch_size",
    "opa_concurrency",
    "relay_max_batch",
    "relay_retry_initial_s",
    "relay_retry_max_s",
)


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


def log_entries(
    log: Path, *, skip_lines: int = 0, until_line: int | None = None
) -> Iterator[dict[str, Any]]:
    """The JSON objects of a process's log, after ``skip_lines`` lines and before
    ``until_line`` (other lines skipped)."""
    with log.open("rb") as f:
        for n, line in enumerate(f):
            if until_line is not None and n >= until_line:
                break
            if n < skip_lines:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


def relay_env(s: Settings) -> dict[str, str]:
    """The environment of an ``accord relay`` process that runs with the settings ``s``."""
    env = dict(os.environ)
    env.update({f"ACCORD_{n.upper()}": str(getattr(s, n)) for n in RELAY_SETTINGS})
    env["ACCORD_KAFKA_BOOTSTRAP"] = s.bootstrap_servers
    env["ACCORD_KAFKA_CA_FILE"] = str(kafka_client.ca_path(s))
    env["ACCORD_KAFKA_CREDENTIALS_FILE"] = str(kafka_client.credentials_path(s))
    env["ACCORD_OPA_URL"] = s.opa_base_url
    # Several relays run side by side (instances, supervised restarts): any free health port.
    env.setdefault("ACCORD_RELAY_HEALTH_PORT", "0")
    env.setdefault("ACCORD_SINK_HEALTH_PORT", "0")
    env.setdefault("ACCORD_AUDIT_CHECKPOINTER_HEALTH_PORT", "0")
    return env


def peak_rss_bytes(pid: int) -> int | None:
    """The high-water mark of a live process's resident memory (VmHWM), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class RelayProcess:
    """``accord relay`` as a child process that can be SIGKILLed and started again.

    ``wrap`` prefixes the command (a profiler, e.g. ``py-spy record ... --``); ``command``
    runs another of Accord's processes with the same settings (``sink``, ``api``), ``env``
    adds to its environment."""

    def __init__(
        self,
        s: Settings,
        log: Path,
        *,
        wrap: Sequence[str] = (),
        command: str = "relay",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._env = {**relay_env(s), **(env or {})}
        self._log = log
        self._wrap = list(wrap)
        self._command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.supervise = True  # False while a fault kills and restarts it on purpose
        self.peak_rss = 0  # the largest VmHWM seen by ``sample_rss``

    def start(self) -> None:
        accord = Path(sys.executable).with_name("accord")
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self._wrap, str(accord), self._command],
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    @property
    def log_file(self) -> Path:
        return self._log

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def sample_rss(self) -> int:
        if self.alive():
            self.peak_rss = max(self.peak_rss, peak_rss_bytes(self.pid) or 0)
        return self.peak_rss

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGINT if self._wrap else signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@asynccontextmanager
async def relay_process(
    s: Settings, log: Path, *, wrap: Sequence[str] = ()
) -> AsyncIterator[RelayProcess]:
    relay = RelayProcess(s, log, wrap=wrap)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@asynccontextmanager
async def supervised(*relays: RelayProcess, every_s: float = 1.0) -> AsyncIterator[list[int]]:
    """Start each relay again whenever it has exited, as a process supervisor would.

    Yields the list of exit codes seen (one per restart, of any of them); a relay with
    ``supervise`` off (killed on purpose, to be restarted or not) is left alone."""
    exits: list[int] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(every_s)
            for relay in relays:
                if relay.supervise and relay.proc is not None and relay.proc.poll() is not None:
                    exits.append(relay.proc.returncode)
                    relay.start()

    task = asyncio.create_task(watch())
    try:
        yield exits
    finally:
        task.cancel()


async def publish_steadily(
    s: Settings,
    producer: AIOKafkaProducer,
    events: Sequence[bytes],
    *,
    per_tick: int = 50,
    tick_s: float = 0.2,
) -> None:
    """About ``per_tick / tick_s`` events a second (250 by default), keyed by survivor, each
    sealed to its survivor as an agency does."""
    records = seal_all(s, events)  # up front: a fault may stop PostgreSQL mid-stream
    for start in range(0, len(events), per_tick):
        for value in records[start : start + per_tick]:
            await producer.send(s.topic_inbound, value, key=subject_of(value))
        await asyncio.sleep(tick_s)
    await producer.flush()


async def read_all(s: Settings, topic: str, *, until: int, timeout_s: float) -> list[bytes]:
    """Every committed record of ``topic`` from the beginning, waiting for ``until`` of them."""
    consumer = AIOKafkaConsumer(
        **kafka_client.kafka(s, kafka_client.ADMIN).kwargs(),
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        parts = await topics.partitions(kafka_client.kafka(s, kafka_client.ADMIN), topic)
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


async def recompute(
    s: Settings, events: Sequence[bytes], consents: Mapping[str, Sequence[JSON]]
) -> Expected:
    """The decisions from scratch: an in-process relay over the same inputs, no Kafka.

    The registry is read from ``s.database_url`` and the policy asked at ``s.opa_base_url``."""
    engine = make_engine(s.sqlalchemy_url)
    sessions = make_sessionmaker(engine, kek_ring=kek_ring(s))
    registry = SqlRegistry(sessions, referrals.addressed_payloads)
    view = StaticConsentView({k: list(v) for k, v in consents.items()})
    released: dict[tuple[str, str], list[str]] = {}
    delivered: set[tuple[str, str]] = set()
    try:
        async with OpaPolicy(s.opa_base_url, timeout_s=30) as policy:
            relay = Relay(
                # The events are given as published before sealing; decisions do not
                # depend on the seal (tests/unit/test_inbound_seal.py).
                s.model_copy(update={"kafka_sealing": "optional"}),
                registry=registry,
                keys=SqlSurvivorKeys(sessions),
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
                result = (await relay.process({tp: chunk}, snapshot))[tp]
                if result.rejected:
                    raise AssertionError(f"{result.rejected} events rejected on recompute")
                for record in result.records:
                    if record.topic != s.topic_decisions:
                        continue
                    for d in split_decisions(json.loads(record.value)):
                        released[(d["event_id"], d["partner_id"])] = sorted(d["released"])
                        if d["delivery_id"]:
                            delivered.add((d["event_id"], d["partner_id"]))
    finally:
        engine.dispose()
    return Expected(released, delivered)


@dataclass(frozen=True)
class Tally:
    """What the partners and the decision topic hold, against the recomputed decisions.

    - ``delivered``: distinct deliveries received by the partners;
    - ``duplicated``: copies beyond the first, of deliveries and of decision records;
    - ``lost``: expected deliveries or decision records that are missing;
    - ``undecided``: deliveries without a decision record that released them, or carrying
      other fields than that record released;
    - ``mismatched``: decision records that differ from the recomputed decision (or were
      not expected at all)."""

    sent: int
    decided: int
    delivered: int
    duplicated: int
    lost: int
    undecided: int
    mismatched: int
    examples: list[str] = field(default_factory=list, compare=False)

    @property
    def ok(self) -> bool:
        return not (self.duplicated or self.lost or self.undecided or self.mismatched)


def tally(
    expected: Expected,
    decisions: Sequence[JSON],
    deliveries: Mapping[str, Sequence[JSON]],
    *,
    sent: int,
) -> Tally:
    """Count, from what was read back, every way exactly-once delivery could have failed.

    ``decisions`` are decision records; ``deliveries`` the opened CloudEvents each partner
    received (its topic from the beginning), by partner id."""
    examples: list[str] = []

    def note(what: str) -> None:
        if len(examples) < 5:
            examples.append(what)

    pairs = Counter((d["event_id"], d["partner_id"]) for d in decisions)
    duplicated = sum(n - 1 for n in pairs.values())
    if duplicated:
        note(f"decided twice: {[p for p, n in pairs.items() if n > 1][:3]}")
    missing = set(expected.released) - set(pairs)
    lost = len(missing)
    if missing:
        note(f"decision missing: {sorted(missing)[:3]}")
    mismatched = 0
    releases: dict[tuple[str, str], list[str]] = {}  # pair → fields its record released
    for d in decisions:
        key = (d["event_id"], d["partner_id"])
        if d["delivery_id"]:
            releases[key] = sorted(d["released"])
        if key not in expected.released or sorted(d["released"]) != expected.released[key]:
            mismatched += 1
            note(f"decision differs from recomputed: {key}")
    delivered = undecided = 0
    for pid, got in deliveries.items():
        ids = Counter(g["id"] for g in got)
        delivered += len(ids)
        duplicated += sum(n - 1 for n in ids.values())
        want = {e for e, p in expected.delivered if p == pid}
        gone = want - set(ids)
        lost += len(gone)
        if gone:
            note(f"{pid} never received {sorted(gone)[:3]}")
        for g in got:
            fields = releases.get((g["id"], pid))
            if fields is None or sorted(g.get("data", {})) != fields:
                undecided += 1
                note(f"{pid} received {g['id']} without a decision releasing those fields")
    return Tally(sent, len(decisions), delivered, duplicated, lost, undecided, mismatched, examples)


async def check(
    s: Settings,
    expected: Expected,
    partner_ids: Sequence[str],
    opener: Callable[[str], Opener],
    *,
    sent: int,
    timeout_s: float = 240,
    partner_timeout_s: float = 60,
) -> tuple[Tally, list[JSON], dict[str, list[JSON]]]:
    """Read back the decision topic and every partner topic, and tally them.

    The timeouts bound the wait for records that never come (a lost one): a caller that knows
    the relay committed everything already can keep them short."""
    events = len({event for event, _ in expected.released})  # one folded record per event
    raw = await read_all(s, s.topic_decisions, until=events, timeout_s=timeout_s)
    decisions = [d for v in raw for d in split_decisions(json.loads(v))]
    deliveries: dict[str, list[JSON]] = {}
    for pid in partner_ids:
        want = sum(1 for _, p in expected.delivered if p == pid)
        records = await read_all(s, s.partner_topic(pid), until=want, timeout_s=partner_timeout_s)
        open_record = opener(pid)
        deliveries[pid] = [open_record(v) for v in records]
    return tally(expected, decisions, deliveries, sent=sent), decisions, deliveries


TABLE_HEAD = ("fault", "sent", "decided", "delivered", "duplicated", "lost", "undecided", "wrong")


def table(rows: Sequence[tuple[str, Tally]], *, width: int = 0) -> list[str]:
    """The fault table: one line per fault, the exactly-once columns last; the first column
    at least ``width`` wide."""
    width = max([width, len(TABLE_HEAD[0]), *(len(name) for name, _ in rows)])
    lines = [f"{TABLE_HEAD[0]:<{width}}" + "".join(f"{h:>11}" for h in TABLE_HEAD[1:])]
    for name, t in rows:
        cells = (t.sent, t.decided, t.delivered, t.duplicated, t.lost, t.undecided, t.mismatched)
        lines.append(f"{name:<{width}}" + "".join(f"{c:>11}" for c in cells))
    return lines
