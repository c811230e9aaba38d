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
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from services.broker import topics
from services.broker.pipeline import deliver
from services.broker.pipeline.decide import Policy, PolicyUnavailable, build_input, decide_all
from services.broker.pipeline.model import InboundEvent, OutRecord, Recipient
from services.broker.pipeline.seal import Sealer
from services.broker.pipeline.validate import SchemaRegistry, event_key, validate
from services.broker.registry import Registry, RegistrySnapshot
from services.broker.replay import Seen, seen_record
from services.compacted import ViewUnavailable
from services.consent.view import ConsentView
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
        clock: Clock = utcnow,
    ) -> None:
        self._s = settings
        self._seen = seen
        self._sealer = sealer
        self._registry = registry
        self._consents = consents
        self._policy = policy
        self._schemas = schemas
        self._clock = clock
        self._known_topics: set[str] = set()

    async def process(
        self, batch: dict[TopicPartition, list[ConsumerRecord]], snapshot: RegistrySnapshot
    ) -> BatchResult:
        """Validate, decide, project and seal one batch into output records (writes nothing)."""
        await self._consents.catch_up()
        await self._seen.catch_up()
        now = self._clock()
        window = timedelta(seconds=self._s.replay_window_s)
        accepted: set[str] = set()  # event keys accepted earlier in this batch

        def seen(key: str) -> bool:
            return key in accepted or key in self._seen

        out: list[OutRecord] = []
        pairs: list[tuple[InboundEvent, Recipient]] = []
        inputs = []
        rejected = 0
        offsets: dict[TopicPartition, int] = {}
        for tp, msgs in batch.items():
            offsets[tp] = msgs[-1].offset + 1
            for msg in msgs:
                checked = validate(
                    msg.value or b"",
                    schemas=self._schemas,
                    agency_keys=snapshot.agency_keys,
                    max_bytes=self._s.max_event_bytes,
                    seen=seen,
                    now=now,
                    max_age=window,
                )
                if not isinstance(checked, InboundEvent):
                    rejected += 1
                    log.warning(
                        f"event rejected: {checked.code}",
                        extra={
                            "code": checked.code,
                            "event_id": checked.event_id,
                            "partition": tp.partition,
                            "offset": msg.offset,
                        },
                    )
                    out.append(
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
                accepted.add(key)
                out.append(OutRecord(self._s.topic_seen, *seen_record(key, checked.time)))
                sid = checked.survivor_id
                facts = {
                    "consents": self._consents.consents_for(sid),
                    "declarations": self._consents.declarations_for(sid),
                    "court_orders": self._consents.court_orders_for(sid),
                }
                jurisdiction = snapshot.jurisdictions[checked.agency_id]
                for recipient in snapshot.recipients(checked.type, publisher=checked.agency_id):
                    pairs.append((checked, recipient))
                    inputs.append(
                        build_input(checked, recipient, jurisdiction=jurisdiction, now=now, **facts)
                    )
        judged = await decide_all(
            self._policy,
            pairs,
            inputs,
            chunk=self._s.opa_batch_size,
            concurrency=self._s.opa_concurrency,
        )
        out.extend(
            deliver.records(
                judged,
                decided_at=now,
                decisions_topic=self._s.topic_decisions,
                partner_topic_prefix=self._s.partner_topic_prefix,
                sealer=self._sealer,
            )
        )
        deliveries = sum(1 for j in judged if j.decision.allow)
        events = sum(len(m) for m in batch.values()) - rejected
        return BatchResult(out, offsets, events, deliveries, rejected)

    async def _ensure_partner_topics(self, snapshot: RegistrySnapshot) -> None:
        wanted = {self._s.partner_topic(p) for p in snapshot.partner_ids()} - self._known_topics
        if wanted:
            ids = [t.removeprefix(self._s.partner_topic_prefix) for t in wanted]
            await topics.ensure_topics(
                self._s.bootstrap_servers, topics.partner_topics(self._s, ids)
            )
            self._known_topics |= wanted

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self._s.topic_inbound,
            bootstrap_servers=self._s.bootstrap_servers,
            group_id=self._s.relay_group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self._s.bootstrap_servers,
            transactional_id=self._s.relay_transactional_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )
        await producer.start()
        await consumer.start()
        log.info("relay started", extra={"group": self._s.relay_group})
        backoff = self._s.relay_retry_initial_s
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self._s.relay_max_batch)
                if not batch:
                    continue
                try:
                    snapshot = self._registry.snapshot()
                    await self._ensure_partner_topics(snapshot)
                    result = await self.process(batch, snapshot)
                    await self._commit(producer, result)
                except ProducerFenced:
                    log.error("another relay instance owns this transactional id; exiting")
                    raise
                except (PolicyUnavailable, ViewUnavailable, KafkaError) as exc:
                    # Hold the batch: nothing of it was delivered. Rewind and retry later.
                    log.warning(
                        "batch held",
                        extra={"cause": type(exc).__name__, "retry_in_s": round(backoff, 2)},
                    )
                    _rewind(consumer, batch)
                    await _sleep_unless(stop, backoff)
                    backoff = min(backoff * 2, self._s.relay_retry_max_s)
                    continue
                backoff = self._s.relay_retry_initial_s
                log.info(
                    "batch relayed",
                    extra={
                        "events": result.events,
                        "deliveries": result.deliveries,
                        "rejected": result.rejected,
                    },
                )
        finally:
            await consumer.stop()
            await producer.stop()

    async def _commit(self, producer: AIOKafkaProducer, result: BatchResult) -> None:
        async with producer.transaction():
            sends = [await producer.send(r.topic, r.value, key=r.key) for r in result.records]
            await producer.send_offsets_to_transaction(result.offsets, self._s.relay_group)
        await asyncio.gather(*sends)


def _rewind(consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
    for tp, msgs in batch.items():
        consumer.seek(tp, msgs[0].offset)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
