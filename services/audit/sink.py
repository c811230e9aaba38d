"""The audit sink: decision records from the decisions topic into the hash chain, each once.

Reads ``read_committed`` (records of aborted relay transactions never arrive). A record
holds one event's decisions, one per partner; each becomes its own chain entry. Each poll's
records are appended in one database transaction (``services/kafka/sink.py``), serialised with every
other appender by the head lock (``store.append``). A record's unique key
``decision:<event id>:<partner id>`` makes a record redelivered after a crash (the offset is
committed after the database commit) a no-op: keys already chained are filtered out before
the batch is appended, and ``store.append`` checks again under the head lock.

Whoever runs the sink may act on each newly chained record in the same transaction: the sink
worker moves a referral whose payload was decided to delivered or refused
(``services/referrals/service.on_decision``), so the chain and the referral agree. The hook is
passed in, so the audit package needs nothing of the referrals above it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from typing import Any

from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.audit import chain, store
from services.audit.models import AuditEntry
from services.decision_records import split_decisions
from services.kafka.client import KafkaConn
from services.kafka.sink import Table, TopicSink

log = logging.getLogger("accord.audit")

Decision = dict[str, Any]
Chained = Callable[[Session, Decision], object]  # called once per record newly chained


def parse_decision(record: ConsumerRecord[bytes, bytes]) -> list[tuple[str, Decision]] | None:
    """A record's partner decisions, one chain entry each (the relay folds an event's
    decisions into one record; ``split_decisions`` gives each partner's back)."""
    try:
        doc = json.loads(record.value or b"")
    except ValueError:
        doc = None
    docs = split_decisions(doc) if isinstance(doc, dict) else []
    if not docs or not all(d.get("event_id") and d.get("partner_id") for d in docs):
        log.error(
            "not a decision record; skipped",
            extra={"partition": record.partition, "offset": record.offset},
        )
        return None
    return [(chain.decision_key(str(d["event_id"]), str(d["partner_id"])), d) for d in docs]


def chained_keys(session: Session, keys: Collection[str]) -> set[str]:
    return set(session.scalars(select(AuditEntry.entry_key).where(AuditEntry.entry_key.in_(keys))))


def decisions_table(then: Chained | None = None) -> Table[str, Decision]:
    """The decisions topic as a table of the chain; ``then`` runs in the appending
    transaction for each record that was not chained before."""

    def append_decision(session: Session, doc: Decision) -> None:
        if store.append_decision(session, doc) is not None and then is not None:
            then(session, doc)

    return Table(parse_decision, chained_keys, append_decision)


def audit_sink(
    conn: KafkaConn,
    topic: str,
    group: str,
    sessions: sessionmaker[Session],
    *,
    then: Chained | None = None,
) -> TopicSink[str, Decision]:
    return TopicSink(conn, topic, group, sessions, decisions_table(then), name="audit")
