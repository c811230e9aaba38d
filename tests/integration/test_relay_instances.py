"""Several relay instances in one consumer group share the inbound partitions; when one is
killed its partitions move to the other, and still every delivery arrives exactly once.

Fencing is per inbound partition (services/broker/ownership.py, PartitionProducers): the instance
that takes a partition over starts that partition's transactional producer, which aborts
whatever the previous owner had open.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from services.kafka import topics
from services.kafka.client import ADMIN, kafka
from services.kafka.offsets import stable_committed
from services.settings import Settings
from tests.integration.test_crash_recovery import Run, check_exactly_once, run
from tools.bench.harness import publish_steadily, relay_process

pytestmark = pytest.mark.integration
__all__ = ["run"]  # the fixture


async def test_two_instances_share_the_partitions_and_survive_a_kill_exactly_once(
    run: Run, database: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    s = run.settings
    logs = [tmp_path / "relay-a.log", tmp_path / "relay-b.log"]
    async with relay_process(s, logs[0]) as a, relay_process(s, logs[1]) as b:
        publishing = asyncio.create_task(publish_steadily(s, producer, run.events))
        await asyncio.sleep(random.uniform(6.0, 9.0))
        b.kill()  # its partitions move to a, mid-stream
        await asyncio.sleep(random.uniform(2.0, 4.0))
        b.start()  # and some come back
        await publishing
        counts = await check_exactly_once(s, run.events)
        exits = [r.proc.poll() if r.proc else None for r in (a, b)]
        assert exits == [None, None], f"a relay instance exited: {exits}"
    relayed = [log.read_text().count('"batch relayed"') for log in logs]
    assert all(n > 0 for n in relayed), f"both instances relayed batches: {relayed}"
    print(f"two instances, one killed: batches per instance {relayed}, deliveries {counts}")


async def test_a_take_over_reads_the_offset_a_transaction_just_committed(
    settings: Settings,
) -> None:
    # Why the hand-over reads with require_stable: right after a transaction commits, a plain
    # OffsetFetch often still answers the offset from before it (the coordinator applies the
    # markers asynchronously); the stable read must answer the new one every time.
    topic = f"{settings.topic_seen}-stable-offsets"
    group = f"{settings.relay_group}-stable-offsets"
    await topics.ensure_topics(kafka(settings, ADMIN), [NewTopic(topic, 1, 1)])
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        **kafka(settings, ADMIN).kwargs(), group_id=group, enable_auto_commit=False
    )
    producer = AIOKafkaProducer(
        **kafka(settings, ADMIN).kwargs(), transactional_id=f"{group}-writer"
    )
    await consumer.start()
    await producer.start()
    stale = 0
    try:
        consumer.assign([tp])
        assert await stable_committed(consumer, tp) is None
        for n in range(1, 101):
            async with producer.transaction():
                await producer.send_and_wait(topic, b"x")
                await producer.send_offsets_to_transaction({tp: n}, group)
            plain = await consumer.committed(tp)
            assert await stable_committed(consumer, tp) == n
            stale += plain != n
    finally:
        await producer.stop()
        await consumer.stop()
    print(f"plain OffsetFetch stale right after a commit: {stale} of 100")
