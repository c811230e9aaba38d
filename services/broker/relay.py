"""The relay: consume inbound events, decide, project, and write the results exactly once.

The aiokafka consume-process-produce pattern and nothing more: auto-commit off,
``read_committed``, and per batch one producer transaction holding the deliveries, the
decision records, the dead letters and the consumed offsets. If OPA, the consent view or
Kafka fails mid-batch, the transaction aborts, the consumer rewinds to the batch start, and
the same batch is retried with bounded exponential backoff: nothing undecided is delivered
and nothing is lost (R1, R3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import IllegalOperation, KafkaError, ProducerFenced

from services.broker import topics
from services.broker.consent_view import ConsentView
from services.broker.pipeline import deliver, unseal
from services.broker.pipeline.decide import Policy, PolicyUnavailable, build_input, decide_all
from services.broker.pipeline.model import (
    InboundEvent,
    Judged,
    OutRecord,
    Recipient,
    Rejection,
)
from services.broker.pipeline.seal import Sealer
from services.broker.pipeline.validate import SchemaRegistry, event_key, validate
from services.broker.registry import Registry, RegistrySnapshot, RegistryUnavailable
from services.broker.replay import Seen, seen_record
from services.broker.stable_offsets import stable_committed
from services.broker.survivor_keys import SurvivorKeys
from services.compacted import ViewUnavailable
from services.kafka_client import RELAY, kafka
from services.observability import metrics
from services.settings import Settings

log = logging.getLogger("accord.relay")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BatchResult:
    records: list[OutRecord]
    offsets: dict[TopicPartition, int]
    events: int
    deliveries: int
    rejected: int
    accepted: dict[str, datetime]  # replay-guard keys of the accepted events, with their time
    stages_ms: dict[str, float]  # where the poll's processing time went, shared by its partitions
    tally: metrics.BatchTally  # what the partition's share adds to the metrics once committed


class _Laps:
    """Milliseconds per pipeline stage of one poll, for the relay's log and the benchmark."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.ms: dict[str, float] = {}

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = round((now - self._last) * 1000, 1)
        self._last = now


class Relay:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry,
        consents: ConsentView,
        policy: Policy,
        schemas: SchemaRegistry,
        seen: Seen,
        sealer: Sealer,
        keys: SurvivorKeys,
        clock: Clock = utcnow,
    ) -> None:
        self._s = settings
        self._keys = keys
        self._seen = seen
        self._sealer = sealer
        self._registry = registry
        self._consents = consents
        self._policy = policy
        self._schemas = schemas
        self._clock = clock
        self._known_topics: set[str] = set()
        # For /readyz (services/observability): the consumer once started, and why a batch is
        # held while it is (None: nothing held).
        self.consumer: AIOKafkaConsumer | None = None
        self.held_cause: str | None = None
        self._held: set[TopicPartition] = set()  # the partitions of the held batch

    async def process(
        self, batch: dict[TopicPartition, list[ConsumerRecord]], snapshot: RegistrySnapshot
    ) -> dict[TopicPartition, BatchResult]:
        """Validate, decide, project and seal one poll into output records per inbound
        partition (writes nothing). One replay check and one policy fan-out serve the whole
        poll; each partition's records go into that partition's own transaction."""
        lap = _Laps()
        await self._consents.catch_up()
        await self._seen.catch_up()
        lap("views")
        # In a thread: the poll's key fetch is a database query (and opening is crypto work);
        # the loop stays free for the consumer's heartbeats and the producers.
        opened = iter(
            await asyncio.to_thread(
                unseal.unseal_all,
                [msg.value or b"" for msgs in batch.values() for msg in msgs],
                self._keys.private_keys,
                required=self._s.kafka_sealing == "required",
                max_bytes=self._s.max_event_bytes,
            )
        )
        lap("unseal")
        now = self._clock()
        window = timedelta(seconds=self._s.replay_window_s)
        # Replay-guard keys accepted earlier in this poll, per partition, with the event time.
        accepted: dict[TopicPartition, dict[str, datetime]] = {tp: {} for tp in batch}

        def seen(key: str) -> bool:
            return key in self._seen or any(key in keys for keys in accepted.values())

        out: dict[TopicPartition, list[OutRecord]] = {tp: [] for tp in batch}
        rejected: Counter[TopicPartition] = Counter()
        tallies = {tp: metrics.BatchTally() for tp in batch}
        pairs: list[tuple[InboundEvent, Recipient]] = []
        pair_tps: list[TopicPartition] = []
        inputs = []
        for tp, msgs in batch.items():
            for msg in msgs:
                record = next(opened)  # the poll's records were unsealed in this order
                checked = (
                    record
                    if isinstance(record, Rejection)
                    else validate(
                        record.event,
                        schemas=self._schemas,
                        agency_keys=snapshot.agency_keys,
                        max_bytes=self._s.max_event_bytes,
                        seen=seen,
                        now=now,
                        max_age=window,
                        sealed_for=record.sealed_for,
                    )
                )
                if not isinstance(checked, InboundEvent):
                    rejected[tp] += 1
                    tallies[tp].dead_letters[checked.code] += 1
                    log.warning(
                        f"event rejected: {checked.code}",
                        extra={
                            "code": checked.code,
                            "event_id": checked.event_id,
                            "partition": tp.partition,
                            "offset": msg.offset,
                        },
                    )
                    out[tp].append(
                        deliver.dead_letter_record(
                            checked,
                            deadletter_topic=self._s.topic_deadletter,
                            topic=tp.topic,
                            partition=tp.partition,
                            offset=msg.offset,
                        )
                    )
                    continue
                key = event_key(checked.agency_id, checked.id)
                accepted[tp][key] = checked.time
                out[tp].append(OutRecord(self._s.topic_seen, *seen_record(key, checked.time)))
                facts = self._consents.facts_for(checked.survivor_id)
                jurisdiction = snapshot.jurisdictions[checked.agency_id]
                for recipient in snapshot.recipients(checked.type, publisher=checked.agency_id):
                    pairs.append((checked, recipient))
                    pair_tps.append(tp)
                    inputs.append(
                        build_input(
                            checked, recipient, jurisdiction=jurisdiction, facts=facts, now=now
                        )
                    )
        lap("validate")
        judged = await decide_all(
            self._policy,
            pairs,
            inputs,
            chunk=self._s.opa_batch_size,
            concurrency=self._s.opa_concurrency,
        )
        lap("decide")
        judged_by_tp: dict[TopicPartition, list[Judged]] = {tp: [] for tp in batch}
        for judgement, tp in zip(judged, pair_tps, strict=True):
            judged_by_tp[tp].append(judgement)
        for tp, mine in judged_by_tp.items():
            for j in mine:
                rules = [*j.decision.reasons, *(r for w in j.decision.withheld for r in w.rules)]
                tallies[tp].decided(deliver.outcome(j.decision), j.recipient.partner_type, rules)
            tallies[tp].relayed = len(batch[tp]) - rejected[tp]
            out[tp].extend(
                deliver.records(
                    mine,
                    decided_at=now,
                    decisions_topic=self._s.topic_decisions,
                    partner_topic_prefix=self._s.partner_topic_prefix,
                    sealer=self._sealer,
                )
            )
        lap("seal")
        return {
            tp: BatchResult(
                records=out[tp],
                offsets={tp: msgs[-1].offset + 1},
                events=len(msgs) - rejected[tp],
                deliveries=sum(1 for j in judged_by_tp[tp] if j.decision.allow),
                rejected=rejected[tp],
                accepted=accepted[tp],
                stages_ms=lap.ms,
                tally=tallies[tp],
            )
            for tp, msgs in batch.items()
        }

    async def _ensure_partner_topics(self, snapshot: RegistrySnapshot) -> None:
        wanted = {self._s.partner_topic(p) for p in snapshot.partner_ids()} - self._known_topics
        if wanted:
            ids = [t.removeprefix(self._s.partner_topic_prefix) for t in wanted]
            await topics.ensure_topics(kafka(self._s, RELAY), topics.partner_topics(self._s, ids))
            self._known_topics |= wanted

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            **kafka(self._s, RELAY).kwargs(),
            group_id=self._s.relay_group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        producers = PartitionProducers(self._s)
        await consumer.start()
        self.consumer = consumer
        consumer.subscribe([self._s.topic_inbound], listener=_Handover(consumer, producers))
        log.info("relay started", extra={"group": self._s.relay_group})
        backoff = self._s.relay_retry_initial_s
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self._s.relay_max_batch)
                await producers.close_unassigned(consumer.assignment())
                _observe_assignment(consumer, producers)
                if not batch:
                    # A held batch is fetched again after its rewind; only if its partitions
                    # went to another instance is nothing held any more.
                    self._release(unless_assigned=consumer.assignment())
                    continue
                held = False
                try:  # one registry snapshot per poll, shared by its partitions
                    started = time.perf_counter()
                    snapshot = await asyncio.to_thread(self._registry.snapshot)  # SQL: off the loop
                    await self._ensure_partner_topics(snapshot)
                    registry_ms = round((time.perf_counter() - started) * 1000, 1)
                except (RegistryUnavailable, KafkaError) as exc:
                    self._hold(consumer, batch, exc)
                    await _sleep_unless(stop, backoff)
                    backoff = min(backoff * 2, self._s.relay_retry_max_s)
                    continue
                ready: dict[TopicPartition, list[ConsumerRecord]] = {}
                for tp, msgs in batch.items():
                    if tp not in consumer.assignment():
                        continue  # revoked since the fetch: its new owner relays these
                    if producers.current(tp) is None:
                        # New to this instance, or fenced: fence the previous writer, then go
                        # on from the committed offset (this fetch may predate it).
                        try:
                            await take_over(consumer, producers, tp)
                        except KafkaError as exc:
                            self._hold(consumer, {tp: msgs}, exc)
                            held = True
                            await producers.close(tp)
                        continue
                    msgs = _not_yet_committed(producers, tp, msgs)
                    if msgs:
                        ready[tp] = msgs
                if ready:
                    try:
                        results = await self.process(ready, snapshot)
                    except (
                        PolicyUnavailable,
                        ViewUnavailable,
                        RegistryUnavailable,
                        KafkaError,
                    ) as exc:
                        self._hold(consumer, ready, exc)
                        held = True
                    else:
                        metrics.record_stages(
                            {"registry": registry_ms, **next(iter(results.values())).stages_ms}
                        )
                        # Each partition has its own transactional producer: commit them
                        # side by side rather than one round trip after another.
                        delivered = await asyncio.gather(
                            *(
                                self._deliver(consumer, producers, tp, ready[tp], r, registry_ms)
                                for tp, r in results.items()
                            )
                        )
                        held = held or not all(delivered)
                if held:
                    await _sleep_unless(stop, backoff)
                    backoff = min(backoff * 2, self._s.relay_retry_max_s)
                else:
                    backoff = self._s.relay_retry_initial_s
                    self._release()
        finally:
            self.consumer = None
            await consumer.stop()
            await producers.close_all()
            log.info("relay stopped")

    async def _deliver(
        self,
        consumer: AIOKafkaConsumer,
        producers: PartitionProducers,
        tp: TopicPartition,
        msgs: list[ConsumerRecord],
        result: BatchResult,
        registry_ms: float,
    ) -> bool:
        """Write one partition's share of a poll in its transaction; False if it is held."""
        producer = producers.current(tp)
        if producer is None:  # closed meanwhile: the partition is taken over on the next poll
            _rewind(consumer, {tp: msgs})
            return True
        started = time.perf_counter()
        try:
            await self._commit(producer, result)
        except (ProducerFenced, IllegalOperation):
            # Another instance took this partition (a fenced producer may also drop out of its
            # transaction mid-batch): this transaction is aborted and the partition goes on
            # from the committed offsets.
            log.warning("partition fenced", extra={"partition": tp.partition})
            await producers.close(tp)
            return True
        except KafkaError as exc:
            await producers.close(tp)  # start clean: a new producer, fenced in
            self._hold(consumer, {tp: msgs}, exc)
            return False
        producers.committed(tp, result.offsets[tp])  # before any await
        commit_ms = round((time.perf_counter() - started) * 1000, 1)
        metrics.record_batch(result.tally)
        metrics.record_stages({"commit": commit_ms})
        # The replay guard's copy of the seen topic may lag this commit's markers for a moment:
        # remember its keys here so a replay in the very next poll is still refused.
        self._seen.remember(result.accepted)
        log.info(
            "batch relayed",
            extra={
                "partition": tp.partition,
                "events": result.events,
                "deliveries": result.deliveries,
                "rejected": result.rejected,
                "stages_ms": {
                    "registry": registry_ms,
                    **result.stages_ms,
                    "commit": commit_ms,
                },
            },
        )
        return True

    def _hold(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        exc: Exception,
    ) -> None:
        cause = metrics.hold_cause(exc)
        metrics.RELAY_HELD_BATCHES.labels(cause).inc()
        metrics.RELAY_HOLDING.set(1)
        self.held_cause = cause
        self._held |= set(batch)
        _hold(consumer, batch, exc)

    def _release(self, *, unless_assigned: set[TopicPartition] | None = None) -> None:
        """A poll delivered (or the held partitions were revoked): nothing is held."""
        if unless_assigned is not None and self._held & unless_assigned:
            return
        self._held.clear()
        if self.held_cause is not None:
            self.held_cause = None
            metrics.RELAY_HOLDING.set(0)

    async def _commit(self, producer: AIOKafkaProducer, result: BatchResult) -> None:
        sends: list[asyncio.Future[object]] = []
        try:
            async with producer.transaction():
                for r in result.records:
                    sends.append(await producer.send(r.topic, r.value, key=r.key))
                await producer.send_offsets_to_transaction(result.offsets, self._s.relay_group)
            await asyncio.gather(*sends)
        finally:
            for f in sends:  # an aborted transaction fails them all; the abort is what counts
                if f.done() and not f.cancelled():
                    f.exception()


class PartitionProducers:
    """One transactional producer per inbound partition, its id derived from the partition.

    aiokafka has no consumer-group fencing (KIP-447), so zombie fencing uses the older scheme
    Kafka Streams used: whichever relay instance owns a partition writes through the producer
    ``<relay_transactional_id>.<topic>.<partition>``. Starting that producer fences a previous
    owner (its open transaction is aborted, its next commit fails), so several instances in
    one group never both deliver the same input record.
    """

    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._by_tp: dict[TopicPartition, AIOKafkaProducer] = {}
        # The next offset known committed: read after fencing, then advanced by each commit.
        self._resume: dict[TopicPartition, int] = {}

    def committed(self, tp: TopicPartition, next_offset: int) -> None:
        self._resume[tp] = next_offset

    def resume_at(self, tp: TopicPartition) -> int | None:
        """Where the committed input of ``tp`` ends, as far as this instance's writer knows."""
        return self._resume.get(tp)

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self._s.relay_transactional_id}.{tp.topic}.{tp.partition}"

    def current(self, tp: TopicPartition) -> AIOKafkaProducer | None:
        return self._by_tp.get(tp)

    async def get(self, tp: TopicPartition) -> AIOKafkaProducer:
        if tp not in self._by_tp:
            producer = AIOKafkaProducer(
                **kafka(self._s, RELAY).kwargs(),
                transactional_id=self.transactional_id(tp),
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
            )
            try:
                await producer.start()  # init_transactions: fences the partition's previous owner
            except BaseException:
                # Closed here, or it is garbage-collected open ("Unclosed AIOKafkaProducer");
                # the caller holds the batch and takes the partition over again.
                with contextlib.suppress(KafkaError):
                    await producer.stop()
                raise
            self._by_tp[tp] = producer
        return self._by_tp[tp]

    async def close(self, tp: TopicPartition) -> None:
        producer = self._by_tp.pop(tp, None)
        self._resume.pop(tp, None)  # a new writer starts from the group's committed offset
        if producer is not None:
            try:
                await producer.stop()
            except KafkaError:  # a fenced producer may fail to abort; it is gone either way
                log.debug("closing a fenced producer failed", exc_info=True)

    async def close_unassigned(self, assigned: set[TopicPartition]) -> None:
        for tp in [tp for tp in self._by_tp if tp not in assigned]:
            await self.close(tp)

    async def close_all(self) -> None:
        for tp in list(self._by_tp):
            await self.close(tp)


class _Handover(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, fence the partition's previous owner first, then read the committed
    offset with ``require_stable``: a transaction the previous owner was committing is
    finished (or aborted) by then, and its offsets applied, so the offset read matches what
    was delivered.

    A partition this instance keeps goes on after its own last commit instead: the consumer
    resets a reassigned partition to the group's committed offset with aiokafka's plain fetch,
    which may predate a transaction this instance committed a moment ago."""

    def __init__(self, consumer: AIOKafkaConsumer, producers: PartitionProducers) -> None:
        self._consumer = consumer
        self._producers = producers

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None  # producers of lost partitions are closed by the loop, between batches

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            if self._producers.current(tp) is not None:  # kept: still its writer
                resume = self._producers.resume_at(tp)
                if resume is not None:
                    self._consumer.seek(tp, resume)
                continue
            try:
                await take_over(self._consumer, self._producers, tp)
            except KafkaError:  # the loop takes the partition over before its first batch
                log.warning("take-over deferred", extra={"partition": tp.partition})
                await self._producers.close(tp)


async def take_over(
    consumer: AIOKafkaConsumer, producers: PartitionProducers, tp: TopicPartition
) -> None:
    """Fence whoever wrote for ``tp`` before, then go on from its last committed offset."""
    await producers.get(tp)
    committed = await stable_committed(consumer, tp)
    if tp not in consumer.assignment():
        return  # revoked meanwhile
    if committed is not None:
        producers.committed(tp, committed)
        consumer.seek(tp, committed)
    else:
        await consumer.seek_to_beginning(tp)


def _observe_assignment(consumer: AIOKafkaConsumer, producers: PartitionProducers) -> None:
    """Assigned partitions and, per partition, the committed inbound records not relayed yet
    (the last stable offset of the latest fetch minus this instance's last commit)."""
    assigned = consumer.assignment()
    metrics.RELAY_ASSIGNED_PARTITIONS.set(len(assigned))
    done = {tp: at for tp in assigned if (at := producers.resume_at(tp)) is not None}
    metrics.record_lag(metrics.RELAY_LAG, metrics.partition_lags(consumer, done))


def _not_yet_committed(
    producers: PartitionProducers, tp: TopicPartition, msgs: list[ConsumerRecord]
) -> list[ConsumerRecord]:
    """Drop records below what is known to be committed for ``tp``.

    The consumer sets a newly assigned partition's position from a committed-offset read
    that runs concurrently with the hand-over and may predate the previous writer's last
    transaction; records fetched from there were relayed already and must not be read twice
    (the replay guard would refuse them, but an agency would see false "replayed" rejections).
    """
    floor = producers.resume_at(tp)
    if floor is None or msgs[0].offset >= floor:
        return msgs
    log.info("skipped records already committed", extra={"partition": tp.partition})
    return [m for m in msgs if m.offset >= floor]


def _hold(
    consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]], exc: Exception
) -> None:
    """Hold a batch: nothing of it was delivered. Rewind; the loop retries after a backoff."""
    log.warning(
        "batch held",
        extra={"cause": type(exc).__name__, "partitions": sorted(tp.partition for tp in batch)},
    )
    _rewind(consumer, batch)


def _rewind(consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
    for tp, msgs in batch.items():
        if tp in consumer.assignment():
            consumer.seek(tp, msgs[0].offset)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
