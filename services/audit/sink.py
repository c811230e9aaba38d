"""The audit sink: decision records from the decisions topic into the hash chain, each once.

Reads ``read_committed`` (records of aborted relay transactions never arrive). Each record is
appended in its own database transaction, serialised with every other appender by the head
lock (``store.append``); its unique key ``decision:<event id>:<partner id>`` makes a record
redelivered after a crash (the offset is committed after the database commit) a no-op.
"""

from __future__ import annotations

import json
import logging

from aiokafka import ConsumerRecord
from sqlalchemy.orm import Session, sessionmaker

from services.audit import store
from services.kafka_client import KafkaConn
from services.sink import TopicSink

log = logging.getLogger("accord.audit")


def append_record(session: Session, record: ConsumerRecord[bytes, bytes]) -> None:
    try:
        doc = json.loads(record.value or b"")
    except ValueError:
        doc = None
    if not (isinstance(doc, dict) and doc.get("event_id") and doc.get("partner_id")):
        log.error(
            "not a decision record; skipped",
            extra={"partition": record.partition, "offset": record.offset},
        )
        return
    store.append_decision(session, doc)


def audit_sink(
    conn: KafkaConn, topic: str, group: str, sessions: sessionmaker[Session]
) -> TopicSink:
    return TopicSink(conn, topic, group, sessions, append_record)
