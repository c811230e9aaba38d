"""A sink's poll is stored in one transaction, on SQLite: keys already stored are filtered out
first (a redelivered poll stores nothing and fails nothing), a key twice in one poll is stored
once, a record that cannot be parsed is skipped, and a batch refused by a unique constraint
(another writer in between) is checked and stored again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.audit import store
from services.audit.models import AuditEntry
from services.audit.sink import decisions_table
from services.broker.edges.models import RejectedEvent
from services.broker.edges.rejections import REJECTIONS, Position
from services.db import Base, make_engine, make_sessionmaker
from services.devstack.tls import ensure_broker_tls
from services.kafka.client import KafkaConn
from services.kafka.sink import Table, TopicSink


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> KafkaConn:
    """Never connected: these tests call store_batch only (the CA file just has to parse)."""
    _, ca_file = ensure_broker_tls(tmp_path_factory.mktemp("tls"))
    return KafkaConn("127.0.0.1:1", "nobody", "unused", ca_file)


@pytest.fixture
async def sinks() -> AsyncIterator[list[TopicSink[Any, Any]]]:
    made: list[TopicSink[Any, Any]] = []
    yield made
    for sink in made:
        await sink.close()


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'sink.db'}")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        "t", 0, offset, 1_767_225_600_000, 0, None, value, None, 0, len(value), ()
    )


def letter(offset: int) -> ConsumerRecord[bytes, bytes]:
    doc = {
        "agency_id": "ag",
        "event_id": f"e-{offset}",
        "code": "malformed",
        "detail": "not a JSON document",
        "inbound": {"topic": "in", "partition": 0, "offset": offset},
    }
    return record(offset, json.dumps(doc).encode())


def decision(n: int) -> ConsumerRecord[bytes, bytes]:
    doc = {"event_id": f"e-{n}", "partner_id": "p", "outcome": "deny", "decided_at": None}
    return record(n, json.dumps(doc).encode())


def rows(sessions: sessionmaker[Session], model: type[RejectedEvent] | type[AuditEntry]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


async def test_a_redelivered_poll_stores_nothing_and_fails_nothing(
    conn: KafkaConn, sessions: sessionmaker[Session], sinks: list[TopicSink[Any, Any]]
) -> None:
    sink = TopicSink(conn, "t", "g", sessions, REJECTIONS)
    sinks.append(sink)
    assert sink.store_batch([letter(n) for n in range(10)]) == 10
    # Half stored already, half new, one twice, one unparseable, one empty: one transaction.
    again = [letter(n) for n in range(5, 15)] + [letter(12), record(99, b"{"), record(98, b"")]
    assert sink.store_batch(again) == 5
    assert rows(sessions, RejectedEvent) == 15
    assert sink.store_batch(again) == 0
    assert rows(sessions, RejectedEvent) == 15


async def test_decisions_are_chained_once_and_the_chain_links(
    conn: KafkaConn, sessions: sessionmaker[Session], sinks: list[TopicSink[Any, Any]]
) -> None:
    sink = TopicSink(conn, "t", "g", sessions, decisions_table())
    sinks.append(sink)
    assert sink.store_batch([decision(n) for n in range(20)]) == 20
    assert sink.store_batch([decision(n) for n in range(10, 30)] + [record(1, b"[]")]) == 10
    assert rows(sessions, AuditEntry) == 30
    with sessions() as session:
        entries = list(store.iter_entries(session))
    assert [e.seq for e in entries] == list(range(1, 31))
    assert all(b.prev_hash == a.entry_hash for a, b in pairwise(entries))


async def test_a_batch_refused_by_the_unique_constraint_is_checked_and_stored_again(
    conn: KafkaConn, sessions: sessionmaker[Session], sinks: list[TopicSink[Any, Any]]
) -> None:
    """As if another writer stored a key between the check and the commit: the first check
    misses it, the database refuses the batch, the second check sees it."""
    checks: list[int] = []

    def stale_once(session: Session, keys: Collection[Position]) -> set[Position]:
        checks.append(len(keys))
        found = REJECTIONS.stored(session, keys)
        return set() if len(checks) == 1 else found

    racing = Table(REJECTIONS.parse, stale_once, REJECTIONS.write)
    sink = TopicSink(conn, "t", "g", sessions, racing)
    other = TopicSink(conn, "t", "g", sessions, REJECTIONS)
    sinks += [sink, other]
    other.store_batch([letter(3)])  # the other writer
    assert sink.store_batch([letter(n) for n in range(6)]) == 5
    assert len(checks) == 2
    assert rows(sessions, RejectedEvent) == 6
