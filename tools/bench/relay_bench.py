"""``accord bench relay``: the relay's throughput, latency and memory against raw Kafka.

In one run on the local stack, with topics, consumer groups and a database of its own:

(a) baseline: a raw Python pass-through with the relay's Kafka settings (read_committed
    consumer, one producer transaction per batch holding the sends and the consumed offsets):
    each inbound event produced to every partner topic, nothing decided, nothing sealed;
(b) the broker's own limit: Kafka's ``ProducerPerformance`` from the same jars, records of the
    same size, transactional, ``acks=all``, ``linger.ms=5``;
(c) the relay as a real ``accord relay`` process: 10 partners of mixed types, half the
    survivors with consent, a quarter minors, signed events, sealed deliveries, decision records;
(d) latency publish → partner receipt at half the relay's measured maximum;
(e) OPA: decisions per second inside the relay, the batch and request sizes it used, and what
    OPA alone answers with requests of the same size;
(f) the relay process's peak resident memory (VmHWM).

Throughput is measured the same way for (a) and (c): the consumer group's committed offsets,
polled every 100 ms, from the first commit to the last (start-up excluded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.broker.pipeline.decide import request_size
from services.broker.survivor_keys import EventSealer, seal_all, subject_of
from services.devstack import kafka, postgres
from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.provisioning import provision
from services.settings import Settings
from tools.bench import opa_latency
from tools.bench.harness import RelayProcess, log_entries, peak_rss_bytes, scoped
from tools.bench.scenario import (
    Scenario,
    change_consents,
    prepare_database,
    prepare_topics,
    run_tag,
)

BENCH_DATABASE = "accord_bench"
Echo = Callable[[str], None]


@dataclass(frozen=True)
class Params:
    events: int = 3000  # preloaded for the relay
    baseline_events: int = 20000  # preloaded for the pass-through
    perf_records: int = 200_000  # for ProducerPerformance
    payload_bytes: int = 1000  # size of an inbound event, signature included
    survivors: int = 200
    latency_s: float = 15.0
    profile: Path | None = None  # py-spy's raw (collapsed) output, when profiling the relay
    engine: Literal["opa", "wasm"] = "opa"  # the relay's policy engine (ACCORD_POLICY_ENGINE)
    variants: bool = True  # also the cold (no reuse) and worst-case (distinct survivors) runs


@dataclass
class Results:
    baseline_eps: float = 0.0
    perf_rps: float = 0.0
    perf_line: str = ""
    record_bytes: float = 0.0
    relay_eps: float = 0.0
    relay_dps: float = 0.0
    latency_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    latency_samples: int = 0
    offered_eps: float = 0.0
    opa_dps: float = 0.0
    opa_alone_dps: float = 0.0
    batch_events: list[int] = field(default_factory=list)
    opa_requests: Counter[int] = field(default_factory=Counter)
    peak_rss: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)
    reuse: Reuse | None = None
    consent_changes: Counter[str] = field(default_factory=Counter)
    cold_eps: float = 0.0  # the same mix, reuse disabled
    worst_eps: float = 0.0  # every event about a different survivor, reuse enabled
    worst_reuse: Reuse | None = None

    @property
    def ratio(self) -> float:
        return self.relay_eps / self.baseline_eps if self.baseline_eps else 0.0

    def ratio_of(self, eps: float) -> float:
        return eps / self.baseline_eps if self.baseline_eps else 0.0


@dataclass(frozen=True)
class Reuse:
    """The relay's decision reuse over a run (its cumulative "decisions reused" log line)."""

    hits: int
    misses: int
    entries: int
    asked: int  # inputs OPA was asked for (the misses of a poll that share a key: once)

    @property
    def rate(self) -> float:
        """Of the decisions made, those not asked of OPA (store hits, and the misses of a
        poll served by one answer to their shared key)."""
        pairs = self.hits + self.misses
        return 1 - self.asked / pairs if pairs else 0.0

    def __str__(self) -> str:
        pairs = self.hits + self.misses
        return (
            f"reuse {self.rate:.1%} (OPA asked for {self.asked} of {pairs} decisions; "
            f"{self.hits} from the store, {self.entries} entries kept)"
        )


def reuse_of(log: Path) -> Reuse | None:
    last = None
    for entry in log_entries(log):
        if entry.get("msg") == "decisions reused":
            last = entry
    if last is None:
        return None
    return Reuse(
        int(last["hits"]), int(last["misses"]), int(last["entries"]), int(last.get("asked", 0))
    )


async def committed(admin: AIOKafkaAdminClient, group: str) -> int:
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except Exception:  # the group does not exist yet
        return 0
    return sum(max(o.offset, 0) for o in offsets.values())


async def rate_until(
    s: Settings,
    group: str,
    total: int,
    *,
    timeout_s: float,
    echo: Echo | None = None,
    what: str = "",
    every_s: float = 5.0,
) -> float:
    """Events per second the group committed, from its first commit until ``total``.

    With ``echo``, a line every ``every_s`` says how far ``what`` got: this phase can take
    minutes on a loaded machine and would otherwise print nothing."""
    admin = AIOKafkaAdminClient(**kafka_client.kafka(s, kafka_client.ADMIN).kwargs())
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        begun = loop.time()
        deadline = begun + timeout_s
        next_line = begun + every_s
        first: tuple[float, int] | None = None
        while loop.time() < deadline:
            done = await committed(admin, group)
            now = loop.time()
            if echo is not None and now >= next_line:
                next_line = now + every_s
                echo(f"    {what}: {done}/{total} events relayed after {now - begun:.0f} s")
            if done and first is None:
                first = (now, done)
            if done >= total:
                if first is None or now - first[0] < 1e-3 or done == first[1]:
                    raise RuntimeError("too few events to measure: raise --events")
                return (done - first[1]) / (now - first[0])
            await asyncio.sleep(0.1)
        raise RuntimeError(f"group {group} committed too little within {timeout_s:.0f}s")
    finally:
        await admin.close()


async def preload(s: Settings, events: Sequence[bytes]) -> None:
    producer = AIOKafkaProducer(
        **kafka_client.kafka(s, kafka_client.ADMIN).kwargs(), acks="all", linger_ms=20
    )
    await producer.start()
    try:
        for value in seal_all(s, events):
            await producer.send(s.topic_inbound, value, key=subject_of(value))
        await producer.flush()
    finally:
        await producer.stop()


async def passthrough(
    s: Settings, partner_topics: Sequence[str], total: int, stop: asyncio.Event
) -> None:
    """The baseline: the relay's Kafka loop with nothing between consume and produce.

    As the relay does: one transactional producer per inbound partition, and per fetched
    partition batch one transaction holding the sends and that partition's offset."""
    consumer = AIOKafkaConsumer(
        s.topic_inbound,
        **kafka_client.kafka(s, kafka_client.RELAY).kwargs(),
        group_id=s.relay_group,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    producers: dict[TopicPartition, AIOKafkaProducer] = {}
    await consumer.start()
    done = 0
    try:
        while done < total and not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=s.relay_max_batch)
            for tp, msgs in batch.items():
                producer = producers.get(tp)
                if producer is None:
                    producer = AIOKafkaProducer(
                        **kafka_client.kafka(s, kafka_client.RELAY).kwargs(),
                        transactional_id=f"{s.relay_transactional_id}.{tp.partition}",
                        enable_idempotence=True,
                        acks="all",
                        linger_ms=5,
                    )
                    await producer.start()
                    producers[tp] = producer
                async with producer.transaction():
                    sends = [
                        await producer.send(topic, m.value, key=m.key)
                        for m in msgs
                        for topic in partner_topics
                    ]
                    offsets = {tp: msgs[-1].offset + 1}
                    await producer.send_offsets_to_transaction(offsets, s.relay_group)
                await asyncio.gather(*sends)
                done += len(msgs)
    finally:
        await consumer.stop()
        for producer in producers.values():
            await producer.stop()


async def measure_baseline(s: Settings, scenario: Scenario, n: int, echo: Echo) -> float:
    sb = scoped(s, run_tag("bench-raw"))
    # The baseline connects as the relay does (same principal, TLS and ACL checks).
    await provision(sb, partners=scenario.partner_ids)
    await topics.ensure_topics(kafka_client.kafka(sb, kafka_client.ADMIN), topics.core_topics(sb))
    partner_topics = topics.partner_topics(sb, scenario.partner_ids)
    await topics.ensure_topics(kafka_client.kafka(sb, kafka_client.ADMIN), partner_topics)
    await preload(sb, [scenario.event(i) for i in range(n)])
    stop = asyncio.Event()
    task = asyncio.create_task(passthrough(sb, [t.name for t in partner_topics], n, stop))
    try:
        eps = await rate_until(sb, sb.relay_group, n, timeout_s=120, echo=echo, what="(a) baseline")
    finally:
        stop.set()
        await task
    echo(f"(a) baseline pass-through   {eps:10.0f} events/s  ({n} events × 10 partner topics)")
    return eps


PERF_LINE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


async def measure_producer_perf(s: Settings, records: int, size: int, echo: Echo) -> float:
    topic = f"{run_tag('bench-perf')}.partner"
    await topics.ensure_topics(kafka_client.kafka(s, kafka_client.ADMIN), [NewTopic(topic, 1, 1)])
    fd, name = tempfile.mkstemp(prefix="accord-perf-", suffix=".properties")  # mode 0600
    with os.fdopen(fd, "w") as f:
        f.write(kafka_client.kafka(s, kafka_client.ADMIN).java_properties())
    props = Path(name)
    argv = [
        "java",
        "-Xmx512m",
        f"-Dlog4j2.configurationFile={kafka.LOG4J}",
        "-cp",
        f"{kafka.lib_dir(s)}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(size),
        "--throughput",
        "-1",
        "--transactional-id",
        f"{topic}-perf",
        "--transaction-duration-ms",
        "100",
        # SASL_SSL as the operator; the properties file (0600, deleted after) holds the password.
        "--producer.config",
        str(props),
        "--producer-props",
        "acks=all",
        "linger.ms=5",
        "enable.idempotence=true",
    ]
    try:
        out = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        await asyncio.to_thread(props.unlink, True)
    found = [m for m in PERF_LINE.finditer(out.stdout)]
    if out.returncode != 0 or not found:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise RuntimeError("ProducerPerformance failed:\n" + "\n".join(tail))
    rps = float(found[-1].group(2))
    echo(
        f"(b) Kafka ProducerPerformance {rps:8.0f} records/s ({records} × {size} B, transactional)"
    )
    return rps


def relay_batches(log: Path) -> tuple[list[tuple[int, int]], Counter[str]]:
    """(events, deliveries) of every "batch relayed" line of a relay log, and the reason codes
    of the events it rejected."""
    out = []
    rejected: Counter[str] = Counter()
    for entry in log_entries(log):
        if entry.get("msg") == "batch relayed":
            out.append((int(entry["events"]), int(entry["deliveries"])))
        elif entry.get("code"):
            rejected[str(entry["code"])] += 1
    return out, rejected


def stage_medians(
    log: Path, *, skip_lines: int = 0, until_line: int | None = None
) -> dict[str, float]:
    """Median milliseconds per relay stage over the polls logged after ``skip_lines`` lines
    (and before ``until_line``; each poll once: its partitions' lines share the poll's stage
    times; commit per line)."""
    stages: dict[str, list[float]] = {}
    for entry in log_entries(log, skip_lines=skip_lines, until_line=until_line):
        if entry.get("msg") == "batch relayed":
            for stage, ms in entry.get("stages_ms", {}).items():
                stages.setdefault(stage, []).append(float(ms))
    return {stage: statistics.median(v) for stage, v in stages.items()}


def slowest_polls(log: Path, *, skip_lines: int = 0, share: float = 0.02) -> dict[str, float]:
    """Mean milliseconds per stage over the slowest ``share`` of the polls (by the sum of
    their stages): what the latency's tail is made of, which medians hide."""
    polls = [
        {stage: float(ms) for stage, ms in entry.get("stages_ms", {}).items()}
        for entry in log_entries(log, skip_lines=skip_lines)
        if entry.get("msg") == "batch relayed"
    ]
    if not polls:
        return {}
    polls.sort(key=lambda stages: sum(stages.values()), reverse=True)
    tail = polls[: max(1, round(len(polls) * share))]
    return {stage: statistics.fmean(p.get(stage, 0.0) for p in tail) for stage in tail[0]}


def latency_tail_causes(log: Path, *, skip_lines: int) -> tuple[tuple[int, int, int], int]:
    """What makes a poll slow, counted after ``skip_lines`` lines of a relay log: (polls, polls
    that asked OPA for plans, plans asked) from its cumulative "decisions reused" lines, and
    the produce requests aiokafka retried on the broker's NOT_ENOUGH_REPLICAS."""
    asked = [int(e.get("asked", 0)) for e in log_entries(log) if e.get("msg") == "decisions reused"]
    before = sum(
        1 for e in log_entries(log, until_line=skip_lines) if e.get("msg") == "decisions reused"
    )
    start = asked[before - 1] if before else 0
    deltas = [b - a for a, b in zip([start, *asked[before:]], asked[before:], strict=False)]
    retried = sum(
        1
        for e in log_entries(log, skip_lines=skip_lines)
        if "NotEnoughReplicasError" in str(e.get("msg", ""))
    )
    return (len(deltas), sum(1 for d in deltas if d > 0), sum(deltas)), retried


def opa_requests(pairs: Sequence[int], chunk: int, concurrency: int) -> Counter[int]:
    """The sizes of the OPA requests the relay made: each batch's pairs spread over
    ``concurrency`` requests of at most ``chunk`` (as ``decide_all`` does)."""
    sizes: Counter[int] = Counter()
    for n in pairs:
        size = request_size(n, chunk=chunk, concurrency=concurrency)
        full, rest = divmod(n, size)
        sizes[size] += full
        if rest:
            sizes[rest] += 1
    return +sizes


def percentiles(samples: Sequence[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


async def measure_latency(
    s: Settings,
    scenario: Scenario,
    partner_ids: Sequence[str],
    eps: float,
    seconds: float,
    split: tuple[list[float], list[float]] | None = None,
) -> list[float]:
    """Publish at ``eps`` for ``seconds``; each delivery's time from publish to receipt (s).
    With ``split``, each delivery's time from publish to the relay's send (its record's
    timestamp) and from that send to receipt (the transaction's commit and the partner's
    fetch) are appended to its two lists."""
    consumer = AIOKafkaConsumer(
        **kafka_client.kafka(s, kafka_client.ADMIN).kwargs(),
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    producer = AIOKafkaProducer(
        **kafka_client.kafka(s, kafka_client.ADMIN).kwargs(), acks="all", linger_ms=0
    )
    await producer.start()
    sent: dict[str, float] = {}
    samples: list[float] = []
    loop = asyncio.get_running_loop()
    # The loop's clock against the wall clock the records' timestamps are in (same host):
    # each delivery's timestamp is the relay's send, which splits its latency in two.
    wall = time.time() - loop.time()
    sealer = EventSealer.for_settings(s)
    try:
        tps = [TopicPartition(s.partner_topic(p), 0) for p in partner_ids]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)

        async def receive(stop: asyncio.Event) -> None:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = loop.time()
                for records in batch.values():
                    for r in records:
                        event_id = json.loads(r.value)["delivery_id"].rsplit("/", 1)[0]
                        if event_id in sent:
                            samples.append(now - sent[event_id])
                            if split is not None:
                                relay_send = r.timestamp / 1000 - wall
                                split[0].append(relay_send - sent[event_id])
                                split[1].append(now - relay_send)

        stop = asyncio.Event()
        receiver = asyncio.create_task(receive(stop))
        start = loop.time()
        n = 0
        while loop.time() - start < seconds:
            due = int((loop.time() - start) * eps)
            while n < due:
                value = scenario.event(n)
                event_id = json.loads(value)["id"]
                record = sealer(value)  # as an agency does, before the clock starts
                sent[event_id] = loop.time()
                await producer.send(s.topic_inbound, record, key=subject_of(value))
                n += 1
            await asyncio.sleep(0.005)
        await producer.flush()
        quiet = len(samples), loop.time()
        while loop.time() - quiet[1] < 3 and loop.time() - start < seconds + 30:
            await asyncio.sleep(0.5)
            if len(samples) != quiet[0]:
                quiet = len(samples), loop.time()
        stop.set()
        await receiver
    finally:
        sealer.close()
        await producer.stop()
        await consumer.stop()
    return samples


def child_pid(pid: int) -> int | None:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


async def measure_relay(
    s: Settings, scenario: Scenario, p: Params, workdir: Path, echo: Echo, r: Results
) -> None:
    sr = scenario.relay_settings(s)
    await prepare_topics(sr, scenario)
    await preload(sr, [scenario.event(i) for i in range(p.events)])
    log = workdir / "relay.log"
    wrap: list[str] = []
    if p.profile is not None:
        wrap = [py_spy(), "record", "--format", "raw", "--rate", "200", "-o", str(p.profile), "--"]
    relay = RelayProcess(sr, log, wrap=wrap)
    relay.start()
    stop_changes = asyncio.Event()
    changes = asyncio.create_task(change_consents(sr, scenario, stop_changes))
    try:
        r.relay_eps = await rate_until(
            sr, sr.relay_group, p.events, timeout_s=150, echo=echo, what="(c) relay"
        )
        stop_changes.set()
        r.consent_changes = await changes
        r.reuse = reuse_of(log)
        batches, rejected = relay_batches(log)
        if rejected:
            echo(f"! the relay rejected benchmark events: {dict(rejected)} (see README)")
        events = sum(e for e, _ in batches) or 1
        r.relay_dps = r.relay_eps * sum(d for _, d in batches) / events
        r.batch_events = [e for e, _ in batches]
        pairs = [e * len(scenario.partner_ids) for e in r.batch_events]
        r.opa_requests = opa_requests(pairs, s.opa_batch_size, s.opa_concurrency)
        r.opa_dps = r.relay_eps * len(scenario.partner_ids)
        echo(
            f"(c) relay                    {r.relay_eps:10.0f} events/s in, "
            f"{r.relay_dps:.0f} deliveries/s out ({p.events} events × 10 partners)"
        )
        echo(
            f"    {r.reuse or 'reuse disabled'}; consents changed during the run: "
            f"{dict(r.consent_changes)}"
        )
        r.offered_eps = r.relay_eps / 2
        logged = sum(1 for _ in log.open("rb"))
        asked = [
            int(e.get("asked", 0))
            for e in log_entries(log, until_line=logged)
            if e.get("msg") == "decisions reused"
        ]
        echo(
            "    plans asked of OPA per poll at full load: "
            + ", ".join(str(b - a) for a, b in zip([0, *asked], asked, strict=False))
        )
        echo(
            "    per poll at full load, median ms: "
            + ", ".join(
                f"{stage} {ms:.1f}" for stage, ms in stage_medians(log, until_line=logged).items()
            )
        )
        halves: tuple[list[float], list[float]] = ([], [])
        samples = await measure_latency(
            sr, scenario, scenario.partner_ids, r.offered_eps, p.latency_s, halves
        )
        if len(samples) < 2:
            raise RuntimeError("no deliveries arrived while measuring latency")
        r.latency_ms = tuple(x * 1000 for x in percentiles(samples))  # type: ignore[assignment]
        r.latency_samples = len(samples)
        p50, p95, p99 = r.latency_ms
        echo(
            f"(d) latency at {r.offered_eps:.0f} events/s   p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
            f"p99 {p99:.1f} ms ({len(samples)} deliveries, publish → partner receipt)"
        )
        if len(halves[0]) >= 2:
            to_send, to_receipt = (tuple(x * 1000 for x in percentiles(h)) for h in halves)
            echo(
                f"    of which publish → relay's send p50 {to_send[0]:.1f} / p99 "
                f"{to_send[2]:.1f} ms, send → partner receipt p50 {to_receipt[0]:.1f} / p99 "
                f"{to_receipt[2]:.1f} ms"
            )
        waited = [
            float(e["oldest_ms"])
            for e in log_entries(log, skip_lines=logged)
            if e.get("msg") == "poll fetched"
        ]
        if len(waited) >= 2:
            w50, _, w99 = percentiles(waited)
            echo(
                f"    a poll's oldest record, from publish to the relay's poll: p50 {w50:.1f} / "
                f"p99 {w99:.1f} ms ({len(waited)} polls)"
            )
        r.stages_ms = stage_medians(log, skip_lines=logged)
        echo(
            "    per poll, median ms:     "
            + ", ".join(f"{stage} {ms:.1f}" for stage, ms in r.stages_ms.items())
        )
        echo(
            "    slowest 2% of polls, mean ms: "
            + ", ".join(
                f"{stage} {ms:.1f}" for stage, ms in slowest_polls(log, skip_lines=logged).items()
            )
        )
        planned, retried = latency_tail_causes(log, skip_lines=logged)
        echo(
            f"    during the latency run: {planned[1]} of {planned[0]} polls asked OPA for plans "
            f"({planned[2]} plans); {retried} produce requests retried (the broker's "
            "NOT_ENOUGH_REPLICAS: a transaction's first send verified before the previous "
            "transaction's markers were written)"
        )
        pid = child_pid(relay.pid) if wrap else relay.pid
        r.peak_rss = (peak_rss_bytes(pid) if pid else None) or 0
    finally:
        stop_changes.set()
        with contextlib.suppress(Exception):
            await changes
        relay.stop()


async def measure_variant(
    s: Settings,
    scenario: Scenario,
    p: Params,
    workdir: Path,
    echo: Echo,
    *,
    what: str,
    mix: str,
    reuse_entries: int,
) -> tuple[float, Reuse | None]:
    """The relay's throughput on a mix of its own (topics and group of their own)."""
    sv = scoped(
        scenario.relay_settings(s), run_tag("bench-var"), decision_reuse_entries=reuse_entries
    )
    kept = scenario.mix, scenario.ends
    scenario.mix = mix
    try:
        await prepare_topics(sv, scenario)
        await preload(sv, [scenario.event(i) for i in range(p.events)])
        log = workdir / f"relay-{mix}-{reuse_entries}.log"
        relay = RelayProcess(sv, log)
        relay.start()
        try:
            eps = await rate_until(
                sv, sv.relay_group, p.events, timeout_s=300, echo=echo, what=what
            )
            rss = peak_rss_bytes(relay.pid) or 0
        finally:
            relay.stop()
        echo(f"    {what}: relay peak RSS {rss / 2**20:.1f} MB")
        return eps, reuse_of(log)
    finally:
        scenario.mix, scenario.ends = kept


def py_spy() -> str:
    """py-spy from the virtualenv, else from PATH (``pip install py-spy``)."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def top_frames(raw: Path, n: int = 15) -> list[str]:
    """The hottest frames of a py-spy raw profile: own samples and samples anywhere on the stack."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        k = int(count)
        total += k
        own[frames[-1]] += k
        for f in set(frames):
            anywhere[f] += k
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples; own time:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n)]
    lines.append("on the stack (inclusive):")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in anywhere.most_common(n)]
    return lines


async def bench(p: Params, echo: Echo) -> Results:
    base = Settings()
    postgres.ensure_database(base, BENCH_DATABASE)
    scenario = Scenario(
        survivors=p.survivors, payload_bytes=p.payload_bytes, mix="realistic", events=p.events
    )
    # Some consents end while the relay runs: their decisions expire in the store mid-run.
    scenario.ends = datetime.now(UTC) + timedelta(seconds=40)
    url = postgres.url(base, BENCH_DATABASE)
    await asyncio.to_thread(prepare_database, url, scenario)
    s = scoped(base, run_tag("bench"), database_url=url).model_copy(
        update={"policy_engine": p.engine}
    )
    r = Results()
    sample = [scenario.event(i) for i in range(200)]
    r.record_bytes = sum(map(len, sample)) / len(sample)
    fewest, mean, most = scenario.events_per_survivor()
    echo(
        f"10 partners, {scenario.survivor_count} survivors with {fewest} to {most} events each "
        f"(mean {mean:.1f}; half with consent, a quarter minors), consents amended and revoked "
        f"during the run, some ending at +40 s; events of {r.record_bytes:.0f} B, relay batches "
        f"of ≤{s.relay_max_batch}, policy engine {s.policy_engine}, reuse store "
        f"≤{s.decision_reuse_entries} decisions"
    )
    r.baseline_eps = await measure_baseline(s, scenario, p.baseline_events, echo)
    r.perf_rps = await measure_producer_perf(s, p.perf_records, round(r.record_bytes), echo)
    with tempfile.TemporaryDirectory(prefix="accord-bench-") as tmp:
        await measure_relay(s, scenario, p, Path(tmp), echo, r)
        if p.variants:
            r.cold_eps, _ = await measure_variant(
                s, scenario, p, Path(tmp), echo, what="(g) cold", mix="realistic", reuse_entries=0
            )
            echo(
                f"(g) relay, reuse disabled    {r.cold_eps:10.0f} events/s "
                f"(ratio {r.ratio_of(r.cold_eps):.3f}; the same mix)"
            )
            r.worst_eps, r.worst_reuse = await measure_variant(
                s,
                scenario,
                p,
                Path(tmp),
                echo,
                what="(h) worst case",
                mix="distinct",
                reuse_entries=s.decision_reuse_entries,
            )
            echo(
                f"(h) relay, distinct survivors{r.worst_eps:10.0f} events/s "
                f"(ratio {r.ratio_of(r.worst_eps):.3f}; every event another survivor; "
                f"{r.worst_reuse or 'reuse disabled'})"
            )
    if p.profile is not None and p.profile.exists():
        for line in top_frames(p.profile):
            echo(line)
    _, batched, _, _ = await opa_latency.measure(
        s, decisions=50, batches=20, batch_size=s.opa_batch_size, warmup=20
    )
    r.opa_alone_dps = batched.decisions_per_s
    sizes = ", ".join(f"{k}×{v}" for k, v in sorted(r.opa_requests.items(), reverse=True)[:4])
    b = r.batch_events
    echo(
        f"(e) OPA in the relay         {r.opa_dps:10.0f} decisions/s; relay batches "
        f"p50 {statistics.median(b):.0f} / max {max(b)} events; OPA requests (pairs×count) "
        f"{sizes}; {s.opa_concurrency} in flight"
    )
    echo(
        f"    OPA alone                {r.opa_alone_dps:10.0f} decisions/s "
        f"(requests of {s.opa_batch_size}, one at a time)"
    )
    echo(f"(f) relay peak RSS           {r.peak_rss / 2**20:10.1f} MB")
    p99 = r.latency_ms[2]
    echo(
        f"summary: ratio {r.ratio:.3f}, p99 {p99:.0f} ms at half load, peak RSS "
        f"{r.peak_rss / 2**20:.0f} MB, reuse {r.reuse.rate if r.reuse else 0:.1%}; "
        f"cold ratio {r.ratio_of(r.cold_eps):.3f}, worst-case ratio {r.ratio_of(r.worst_eps):.3f}"
    )
    echo(f"ratio relay/baseline: {r.ratio:.3f} ({r.relay_eps:.0f} / {r.baseline_eps:.0f} events/s)")
    return r


def run(p: Params, echo: Echo) -> Results:
    return asyncio.run(bench(p, echo))
