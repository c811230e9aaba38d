"""The relay: consume inbound events, decide, project, and write the results exactly once.

The aiokafka consume-process-produce pattern and nothing more: auto-commit off,
``read_committed``, and per inbound partition one producer transaction holding the
deliveries, the decision records, the dead letters and the consumed offsets. ``process``
runs the stages of ``pipeline/`` over one list of poll items (unseal → validate → decide →
project → seal → deliver); ``run`` is the loop; which instance writes for which partition
is ``ownership.py``. If OPA, the consent view, the database or Kafka fails mid-batch
(``services.unavailable.Unavailable``, ``KafkaError``), the transaction aborts, the consumer
rewinds to the batch start, and the same batch is retried with bounded exponential backoff:
nothing undecided is delivered and nothing is lost (R1, R3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import IllegalOperation, KafkaError, ProducerFenced

from services.broker import ownership
from services.broker.consent_view import ConsentView
from services.broker.ownership import Handover, PartitionProducers
from services.broker.pipeline import decide, deliver, project, seal, unseal, validate
from services.broker.pipeline.decide import Planned, Policy
from services.broker.pipeline.model import OutRecord, PollItem
from services.broker.pipeline.reuse import ReuseStore
from services.broker.pipeline.seal import Sealer
from services.broker.pipeline.validate import SchemaRegistry, event_key
from services.broker.registry import Registry, RegistrySnapshot
from services.broker.replay import Seen
from services.broker.survivor_keys import SurvivorKeys
from services.kafka import topics
from services.kafka.client import RELAY, kafka
from services.observability import metrics
from services.settings import Settings
from services.unavailable import Unavailable

log = logging.getLogger("accord.relay")
A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")

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
        reuse: ReuseStore[Planned] | None = None,
    ) -> None:
        self._s = settings
        self._reuse = reuse  # decisions kept until their valid_until (pipeline/reuse.py)
        self._keys = keys
        self._seen = seen
        self._sealer = sealer
        self._registry = registry
        self._consents = consents
        self._policy = policy
        self._schemas = schemas
        self._clock = clock
        self._known_topics: set[str] = set()
        self._topics = deliver.Topics(
            decisions=settings.topic_decisions,
            deadletter=settings.topic_deadletter,
            seen=settings.topic_seen,
            partner_prefix=settings.partner_topic_prefix,
        )
        # For /readyz (services/observability): the consumer once started, and why a batch is
        # held while it is (None: nothing held).
        self.consumer: AIOKafkaConsumer | None = None
        self.held_cause: str | None = None
        self._held: set[TopicPartition] = set()  # the partitions of the held batch
        # Replay-guard keys of the previous poll while its transactions commit: the next
        # poll is validated meanwhile (see run), and must refuse them too.
        self._committing: dict[str, datetime] = {}
        self._owned: set[TopicPartition] = set()  # the assignment of the previous poll

    def _seen_or_committing(self, key: str) -> bool:
        return key in self._seen or key in self._committing

    async def process(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        snapshot: RegistrySnapshot,
        *,
        views_ms: float | None = None,
    ) -> dict[TopicPartition, BatchResult]:
        """Unseal, validate, decide, project, seal and deliver one poll into output records
        per inbound partition (writes nothing). The stages run in order over one list of poll
        items: one replay check and one policy fan-out serve the whole poll; each partition's
        records go into that partition's own transaction. With ``views_ms`` the views were
        brought up to date by the caller, in that time."""
        lap = _Laps()
        if views_ms is None:
            await self._catch_up()
            lap("views")
        else:  # caught up already, beside the registry read (see _prepare)
            lap.ms["views"] = views_ms
        s = self._s
        # In a thread: the poll's key fetch is a database query (and opening is crypto work);
        # the loop stays free for the consumer's heartbeats and the producers.
        items = await asyncio.to_thread(
            unseal.unseal,
            poll_items(batch),
            self._keys.private_keys,
            required=s.kafka_sealing == "required",
            max_bytes=s.max_event_bytes,
        )
        lap("unseal")
        now = self._clock()
        items = validate.validate_all(
            items,
            schemas=self._schemas,
            agency_keys=snapshot.agency_keys,
            max_bytes=s.max_event_bytes,
            seen=self._seen_or_committing,
            now=now,
            max_age=timedelta(seconds=s.replay_window_s),
        )
        lap("validate")
        items = await decide.decide(
            items,
            self._policy,
            audience=snapshot,
            facts=self._consents.facts_for,
            now=now,
            chunk=s.opa_batch_size,
            concurrency=s.opa_concurrency,
            reuse=self._reuse,
        )
        lap("decide")
        self._log_reuse()
        items = project.project_all(items)
        items = seal.seal_all(items, self._sealer)
        items = deliver.deliver(items, topics=self._topics, decided_at=now)
        lap("seal")
        return batch_results(items, stages_ms=lap.ms)

    async def _catch_up(self) -> None:
        """The consent view and the replay guard up to their topics' ends, side by side."""
        await _both(self._consents.catch_up(), self._seen.catch_up())

    def _log_reuse(self) -> None:
        if self._reuse is not None:
            stats = self._reuse.stats
            log.info(
                "decisions reused",
                extra={
                    "hits": stats.hits,
                    "misses": stats.misses,
                    "asked": stats.asked,
                    "entries": len(self._reuse),
                },
            )

    async def _ensure_partner_topics(self, snapshot: RegistrySnapshot) -> None:
        wanted = {self._s.partner_topic(p) for p in snapshot.partner_ids()} - self._known_topics
        if wanted:
            ids = [t.removeprefix(self._s.partner_topic_prefix) for t in wanted]
            await topics.ensure_topics(kafka(self._s, RELAY), topics.partner_topics(self._s, ids))
            self._known_topics |= wanted

    async def run(self, stop: asyncio.Event) -> None:
        """Relay polls until ``stop``; a poll held in part or whole is retried after a backoff
        from ``relay_retry_initial_s`` doubling to ``relay_retry_max_s``."""
        consumer = self._consumer()
        producers = PartitionProducers(self._s)
        await consumer.start()
        self.consumer = consumer
        handover = Handover(consumer, producers)
        consumer.subscribe([self._s.topic_inbound], listener=handover)
        log.info("relay started", extra={"group": self._s.relay_group})
        backoff = self._s.relay_retry_initial_s
        # The previous poll's commits, running while this poll is fetched and processed (the
        # commits are mostly waits on the broker, and processing mostly waits on OPA).
        pending: asyncio.Task[Committed] | None = None
        rebalances = handover.rebalances
        try:
            while not stop.is_set():
                batch = await self._poll(consumer)
                # A hand-over (which seeks a kept partition to its last known commit) or a
                # change of assignment is met with the previous poll committed, as before.
                handed_over = handover.rebalances != rebalances
                rebalances = handover.rebalances
                if pending is not None and (
                    not batch or handed_over or consumer.assignment() != self._owned
                ):
                    ok = self._settle(consumer, await pending, None)
                    pending = None
                    if not ok:
                        await _sleep_unless(stop, backoff)
                        backoff = min(backoff * 2, self._s.relay_retry_max_s)
                        continue
                await producers.close_unassigned(consumer.assignment())
                ownership.observe_assignment(consumer, producers)
                self._owned = set(consumer.assignment())
                if not batch:
                    # A held batch is fetched again after its rewind; only if its partitions
                    # went to another instance is nothing held any more.
                    self._release(unless_assigned=consumer.assignment())
                    continue
                prepared = await self._prepare(consumer, producers, batch)
                held = prepared.held
                if pending is not None:
                    held = not self._settle(consumer, await pending, prepared) or held
                    pending = None
                if prepared.ready:
                    pending = asyncio.create_task(self._deliver_all(consumer, producers, prepared))
                    if not self._s.relay_overlap:
                        held = not self._settle(consumer, await pending, None) or held
                        pending = None
                if held:
                    if pending is not None:  # commit what is not held before the backoff
                        self._settle(consumer, await pending, None)
                        pending = None
                    await _sleep_unless(stop, backoff)
                    backoff = min(backoff * 2, self._s.relay_retry_max_s)
                else:
                    backoff = self._s.relay_retry_initial_s
                    self._release()
        finally:
            await self._stop(consumer, producers, pending)

    async def _stop(
        self,
        consumer: AIOKafkaConsumer,
        producers: PartitionProducers,
        pending: asyncio.Task[Committed] | None,
    ) -> None:
        try:
            if pending is not None:
                with contextlib.suppress(Exception):
                    self._settle(consumer, await pending, None)
        finally:
            self.consumer = None
            await consumer.stop()
            await producers.close_all()
            log.info("relay stopped")

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **kafka(self._s, RELAY).kwargs(),
            group_id=self._s.relay_group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._s.relay_fetch_max_wait_ms,
        )

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[ConsumerRecord]]:
        """One poll: what the consumer holds, topped up with what arrived since.

        The records ``getmany`` returns were fetched just after the previous poll was taken
        (the consumer fetches a partition again only once its records are consumed), so on
        their own they are one poll's processing old, and a record waits one to two polls'
        processing (docs/relay.md#latency). The fetch that consuming them starts brings what
        arrived meanwhile within a round trip: the poll waits up to ``relay_poll_top_up_ms``
        for it, unless it is full already."""
        limit = self._s.relay_max_batch
        batch: dict[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(
            timeout_ms=200, max_records=limit
        )
        taken = sum(map(len, batch.values()))
        if batch and taken < limit and self._s.relay_poll_top_up_ms > 0:
            more = await consumer.getmany(
                timeout_ms=self._s.relay_poll_top_up_ms, max_records=limit - taken
            )
            for tp, msgs in more.items():
                batch[tp] = [*batch.get(tp, []), *msgs]
        if batch:
            _log_fetched(batch)
        return batch

    async def _relay(
        self,
        consumer: AIOKafkaConsumer,
        producers: PartitionProducers,
        batch: dict[TopicPartition, list[ConsumerRecord]],
    ) -> bool:
        """Relay one poll, its commits awaited; False if any of it is held (rewound)."""
        prepared = await self._prepare(consumer, producers, batch)
        if not prepared.ready:
            return not prepared.held
        committed = await self._deliver_all(consumer, producers, prepared)
        return self._settle(consumer, committed, None)

    async def _prepare(
        self,
        consumer: AIOKafkaConsumer,
        producers: PartitionProducers,
        batch: dict[TopicPartition, list[ConsumerRecord]],
    ) -> Prepared:
        """Claim and process one poll (writes nothing); ``held`` if any of it is held.

        The poll's fixed waits run side by side: one registry snapshot (shared by its
        partitions) and the views' catch-up."""
        ready, owned = await self._claim(consumer, producers, batch)
        if not ready:
            return Prepared({}, {}, 0.0, held=not owned)
        try:
            (snapshot, registry_ms), (_, views_ms) = await _both(
                _timed(asyncio.to_thread(self._registry.snapshot)),  # SQL: off the loop
                _timed(self._catch_up()),
            )
            await self._ensure_partner_topics(snapshot)
            results = await self.process(ready, snapshot, views_ms=views_ms)
        except (Unavailable, KafkaError) as exc:
            self._hold(consumer, ready, exc)
            return Prepared({}, {}, 0.0, held=True)
        metrics.record_stages({"registry": registry_ms, **next(iter(results.values())).stages_ms})
        for r in results.values():
            self._committing.update(r.accepted)
        return Prepared(ready, results, registry_ms, held=not owned)

    async def _deliver_all(
        self, consumer: AIOKafkaConsumer, producers: PartitionProducers, prepared: Prepared
    ) -> Committed:
        """Commit a prepared poll, each partition's transaction side by side rather than one
        round trip after another; the partitions held, with the batch they held."""
        ready, results = prepared.ready, prepared.results
        try:
            delivered = await asyncio.gather(
                *(
                    self._deliver(consumer, producers, tp, ready[tp], r, prepared.registry_ms)
                    for tp, r in results.items()
                )
            )
        finally:
            for r in results.values():
                for key in r.accepted:
                    self._committing.pop(key, None)
        held = {tp: ready[tp] for tp, ok in zip(results, delivered, strict=True) if not ok}
        return Committed(held, ok=not prepared.held and not held)

    def _settle(
        self, consumer: AIOKafkaConsumer, committed: Committed, next_poll: Prepared | None
    ) -> bool:
        """After a poll's commits: its held partitions rewound to its start again (the next
        poll, processed meanwhile, may have moved them), and what the next poll made of them
        dropped from it. True if nothing of the poll was held."""
        _rewind(consumer, committed.held)
        if next_poll is not None:
            for tp in committed.held:
                next_poll.ready.pop(tp, None)
                dropped = next_poll.results.pop(tp, None)
                for key in dropped.accepted if dropped is not None else ():
                    self._committing.pop(key, None)
        return committed.ok

    async def _claim(
        self,
        consumer: AIOKafkaConsumer,
        producers: PartitionProducers,
        batch: dict[TopicPartition, list[ConsumerRecord]],
    ) -> tuple[dict[TopicPartition, list[ConsumerRecord]], bool]:
        """The records of the poll this instance relays now (``ownership.claim``), and False
        if a partition's take-over failed (that partition is held)."""
        ready: dict[TopicPartition, list[ConsumerRecord]] = {}
        owned = True
        for tp, msgs in batch.items():
            try:
                mine = await ownership.claim(consumer, producers, tp, msgs)
            except KafkaError as exc:
                self._hold(consumer, {tp: msgs}, exc)
                owned = False
                await producers.close(tp)
                continue
            if mine:
                ready[tp] = mine
        return ready, owned

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


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both waits' results, side by side; both finished before either's failure is raised (a
    view is never read by two catch-ups at once, as a cancelled one could leave its thread
    running)."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for result in (a, b):
        if isinstance(result, BaseException):
            raise result
    return cast(A, a), cast(B, b)


async def _timed(wait: Awaitable[T]) -> tuple[T, float]:
    """``wait``'s result and how long it took (ms)."""
    started = time.perf_counter()
    result = await wait
    return result, round((time.perf_counter() - started) * 1000, 1)


def _log_fetched(batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
    """How long the poll's oldest record waited since its producer stamped it (the same
    host's clock in a benchmark; the latency trace of docs/relay.md)."""
    oldest = min(msg.timestamp for msgs in batch.values() for msg in msgs)
    log.info(
        "poll fetched",
        extra={
            "records": sum(map(len, batch.values())),
            "oldest_ms": round(time.time() * 1000 - oldest, 1),
        },
    )


def poll_items(batch: dict[TopicPartition, list[ConsumerRecord]]) -> list[PollItem]:
    """The poll as one list, in the order of its partitions and offsets."""
    return [
        PollItem(tp.topic, tp.partition, msg.offset, msg.value or b"")
        for tp, msgs in batch.items()
        for msg in msgs
    ]


def batch_results(
    items: Sequence[PollItem], *, stages_ms: dict[str, float]
) -> dict[TopicPartition, BatchResult]:
    """The delivered poll split by inbound partition, for each partition's transaction."""
    by_tp: dict[TopicPartition, list[PollItem]] = {}
    for item in items:
        by_tp.setdefault(TopicPartition(item.topic, item.partition), []).append(item)
    return {tp: _result(tp, mine, stages_ms) for tp, mine in by_tp.items()}


def _result(tp: TopicPartition, items: list[PollItem], stages_ms: dict[str, float]) -> BatchResult:
    tally = metrics.BatchTally()
    accepted: dict[str, datetime] = {}
    for item in items:
        if item.rejection is not None:
            tally.dead_letters[item.rejection.code] += 1
            _log_rejection(item)
        elif item.event is not None:
            accepted[event_key(item.event.agency_id, item.event.id)] = item.event.time
        for j in item.judged:
            rules = [*j.decision.reasons, *(r for w in j.decision.withheld for r in w.rules)]
            tally.decided(deliver.outcome(j.decision), j.recipient.partner_type, rules)
    rejected = sum(tally.dead_letters.values())
    tally.relayed = len(items) - rejected
    return BatchResult(
        records=[r for item in items for r in item.records],
        offsets={tp: items[-1].offset + 1},
        events=len(items) - rejected,
        deliveries=sum(1 for item in items for j in item.judged if j.decision.allow),
        rejected=rejected,
        accepted=accepted,
        stages_ms=stages_ms,
        tally=tally,
    )


def _log_rejection(item: PollItem) -> None:
    assert item.rejection is not None
    log.warning(
        f"event rejected: {item.rejection.code}",
        extra={
            "code": item.rejection.code,
            "event_id": item.rejection.event_id,
            "partition": item.partition,
            "offset": item.offset,
        },
    )


@dataclass
class Prepared:
    """A poll claimed and processed, not yet committed."""

    ready: dict[TopicPartition, list[ConsumerRecord]]
    results: dict[TopicPartition, BatchResult]
    registry_ms: float
    held: bool = False  # some of the poll is held (rewound)


@dataclass
class Committed:
    held: dict[TopicPartition, list[ConsumerRecord]]  # the partitions whose commit was held
    ok: bool  # nothing of the poll was held


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
