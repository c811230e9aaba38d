"""Witnessed checkpoints: where signed checkpoints live outside the database.

* A Kafka topic (``ACCORD_TOPIC_AUDIT_CHECKPOINTS``, one partition, ``retention.ms=-1``) that
  only the checkpointer's principal may write (services/kafka/acls.py), through a
  transactional producer: a second checkpointer with the same transactional id fences the
  first, so there is one writer, and a new one starts from every record the last one
  committed. The API and ``accord audit verify`` read it with ``read_committed``.
* A JSON-lines file (``ACCORD_AUDIT_WITNESS_FILE``), one record a line, appended and synced
  by the checkpointer: a copy a compliance officer can keep anywhere and verify against
  (``accord audit verify --witness-file``). Each record links to the one before it, so a line
  removed from a copy is seen.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from nacl.signing import VerifyKey
from sqlalchemy.orm import Session, sessionmaker

from services.audit import store
from services.audit.chain import Checkpoint, VerifyReport
from services.kafka.client import KafkaConn
from services.settings import Settings


def witness_topic(s: Settings) -> NewTopic:
    # Never deleted, never compacted: every signed record stays (CT logs are append-only).
    configs = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
    return NewTopic(s.topic_audit_checkpoints, 1, 1, topic_configs=configs)


def witness_file(s: Settings) -> Path:
    if s.audit_witness_file:
        return Path(s.audit_witness_file)
    return s.state_dir / "audit" / "checkpoints.jsonl"


async def read_topic(conn: KafkaConn, topic: str, *, timeout_s: float = 30.0) -> list[Checkpoint]:
    """Every committed record of the witness topic, in order."""
    consumer = AIOKafkaConsumer(
        **conn.kwargs(), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            # No checkpointer has run yet (it creates the topic): nothing is witnessed. A topic
            # deleted by a Kafka super user reads the same; a kept copy still tells.
            return []
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]  # the last stable offset
        out: list[Checkpoint] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await consumer.position(tp) < end:
            if loop.time() > deadline:
                raise TimeoutError(f"reading the witness topic {topic} took over {timeout_s}s")
            batch = await consumer.getmany(tp, timeout_ms=500)
            out.extend(Checkpoint.from_json(m.value) for m in batch.get(tp, []) if m.value)
        return out
    finally:
        await consumer.stop()


def read_file(path: Path) -> list[Checkpoint]:
    """The records of a kept JSON-lines copy, in order (a missing file holds none)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [Checkpoint.from_json(line) for line in lines if line.strip()]


def append_file(path: Path, records: list[Checkpoint]) -> None:
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for r in records:
            f.write(r.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


class KafkaWitness:
    """The checkpointer's writer: ``start`` fences any earlier checkpointer and returns every
    committed record; ``publish`` commits one record (raises once fenced by a newer one)."""

    def __init__(self, conn: KafkaConn, topic: str, transactional_id: str) -> None:
        self._conn = conn
        self._topic = topic
        self._producer = AIOKafkaProducer(
            **conn.kwargs(),
            acks="all",
            enable_idempotence=True,
            transactional_id=transactional_id,
        )

    async def start(self) -> list[Checkpoint]:
        await self._producer.start()  # InitProducerId: aborts and fences the previous writer
        return await read_topic(self._conn, self._topic)

    async def publish(self, record: Checkpoint) -> None:
        async with self._producer.transaction():
            await self._producer.send_and_wait(self._topic, record.to_json().encode(), partition=0)

    async def stop(self) -> None:
        await self._producer.stop()


class Verification:
    """How an API process verifies: the database against the witness topic, with the
    published verify keys. ``report`` on the event loop; ``report_blocking`` from a worker
    thread (the dashboard's sync handlers), which reads the topic on the loop it was made on."""

    def __init__(
        self,
        conn: KafkaConn,
        topic: str,
        checkpoint_key: VerifyKey,
        appender_key: VerifyKey,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._conn = conn
        self._topic = topic
        self.checkpoint_key = checkpoint_key
        self.appender_key = appender_key
        self._loop = loop

    async def witnessed(self) -> list[Checkpoint]:
        return await read_topic(self._conn, self._topic)

    def _verify(self, sessions: sessionmaker[Session], records: list[Checkpoint]) -> VerifyReport:
        return store.verify_database(sessions, records, self.checkpoint_key, self.appender_key)

    async def report(self, sessions: sessionmaker[Session]) -> VerifyReport:
        # Entries first, witnesses second would let a checkpoint signed in between name
        # entries not read yet; witnesses first only leaves the newest entries unwitnessed.
        records = await self.witnessed()
        return await asyncio.to_thread(self._verify, sessions, records)

    def report_blocking(self, sessions: sessionmaker[Session]) -> VerifyReport:
        records = asyncio.run_coroutine_threadsafe(self.witnessed(), self._loop).result(60)
        return self._verify(sessions, records)


def audit_verification(s: Settings) -> Verification:
    """The API's verification (on the running loop), as the API's principal, with the
    published verify keys; appends in the same process are signed with the appender key."""
    from services.audit.signing import appender_verify_key, checkpoint_verify_key
    from services.kafka.client import API, kafka

    return Verification(
        kafka(s, API),
        s.topic_audit_checkpoints,
        checkpoint_verify_key(s),
        appender_verify_key(s),
        asyncio.get_running_loop(),
    )
