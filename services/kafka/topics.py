"""Kafka topics Accord uses, created idempotently with the admin API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError

from services.kafka.client import KafkaConn
from services.settings import Settings


def core_topics(s: Settings) -> list[NewTopic]:
    return [
        # Keyed by survivor: one survivor's events stay in order on one partition.
        NewTopic(s.topic_inbound, s.inbound_partitions, 1),
        NewTopic(s.topic_decisions, 3, 1),
        NewTopic(s.topic_deadletter, 1, 1),
        NewTopic(s.topic_consents, 3, 1, topic_configs={"cleanup.policy": "compact"}),
        NewTopic(
            s.topic_seen,
            s.inbound_partitions,
            1,
            topic_configs={
                "cleanup.policy": "compact,delete",
                "retention.ms": str((s.replay_window_s + 86400) * 1000),
            },
        ),
    ]


async def ensure_topics(conn: KafkaConn, topics: Iterable[NewTopic]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    wanted = list(topics)
    admin = AIOKafkaAdminClient(**conn.kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created it first
        return [t.name for t in missing]
    finally:
        await admin.close()


def partner_topics(s: Settings, partner_ids: Iterable[str]) -> list[NewTopic]:
    return [NewTopic(s.partner_topic(p), 1, 1) for p in sorted(partner_ids)]


def referrals_topic(s: Settings) -> NewTopic:
    """Each referral's changes (services/referrals/publish.py), keyed by referral id."""
    return NewTopic(s.topic_referrals, 3, 1)


def reply_topics(s: Settings, partner_ids: Iterable[str]) -> list[NewTopic]:
    """Each partner's referral reply topic, which it alone writes (referrals/replies.py)."""
    return [NewTopic(s.reply_topic(p), 1, 1) for p in sorted(partner_ids)]


async def partitions(conn: KafkaConn, topic: str, *, timeout_s: float = 10.0) -> set[int]:
    """The topic's partitions, waiting while a just-created topic's metadata propagates."""
    client = AIOKafkaClient(**conn.kwargs())
    await client.bootstrap()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            found = (await client.fetch_all_metadata()).partitions_for_topic(topic)
            if found or loop.time() >= deadline:
                return set(found or ())
            await asyncio.sleep(0.1)
    finally:
        await client.close()
