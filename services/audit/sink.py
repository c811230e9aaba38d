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
from services.sink import TopicSink

log = logging.getLogger("accord.audit")


class AuditSink(TopicSink):
    def __init__(
        self, bootstrap: str, topic: str, group: str, sessions: sessionmaker[Session]
    ) -> None:
        super().__init__(bootstrap, topic, group, sessions, lambda _rec: None)
        self._audit_sessions = sessions

    def _store(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if not record.value:
            return
        try:
            doc = json.loads(record.value)
            assert isinstance(doc, dict) and doc.get("event_id") and doc.get("partner_id")
        except (ValueError, AssertionError):
            log.error(
                "not a decision record; skipped",
                extra={"partition": record.partition, "offset": record.offset},
            )
            return
        with self._audit_sessions() as session, session.begin():
            store.append_decision(session, doc)


def audit_sink(
    bootstrap: str, topic: str, group: str, sessions: sessionmaker[Session]
) -> AuditSink:
    return AuditSink(bootstrap, topic, group, sessions)
