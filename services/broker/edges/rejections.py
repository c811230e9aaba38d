"""Rejected events: the relay's dead letters, kept per agency so it can see what failed and why.

A sink copies the dead-letter topic into ``rejected_events``; an agency lists its own. Only the
reason code and a description that never contains payload values are stored or shown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Annotated

from aiokafka import ConsumerRecord
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.broker.edges.models import RejectedEvent
from services.deps import SessionDep
from services.kafka.client import KafkaConn
from services.kafka.sink import Table, TopicSink

log = logging.getLogger("accord.rejections")

router = APIRouter(prefix="/v1/events", tags=["ingest"])

AgencyPrincipal = Annotated[Principal, Depends(require(Role.AGENCY))]


Position = tuple[str, int, int]  # the inbound record's topic, partition, offset


def rejected_from_record(record: ConsumerRecord[bytes, bytes]) -> RejectedEvent:
    doc = json.loads(record.value or b"{}")
    inbound = doc["inbound"]
    return RejectedEvent(
        agency_id=doc.get("agency_id"),
        event_id=doc.get("event_id"),
        code=doc["code"],
        detail=doc["detail"][:2000],
        inbound_topic=inbound["topic"],
        inbound_partition=inbound["partition"],
        inbound_offset=inbound["offset"],
        rejected_at=datetime.fromtimestamp(record.timestamp / 1000, UTC),
    )


def parse_rejection(record: ConsumerRecord[bytes, bytes]) -> tuple[Position, RejectedEvent] | None:
    try:
        row = rejected_from_record(record)
    except (ValueError, KeyError, TypeError):
        log.error(
            "not a dead letter; skipped",
            extra={"partition": record.partition, "offset": record.offset},
        )
        return None
    return (row.inbound_topic, row.inbound_partition, row.inbound_offset), row


def stored_positions(session: Session, keys: Collection[Position]) -> set[Position]:
    position = tuple_(
        RejectedEvent.inbound_topic, RejectedEvent.inbound_partition, RejectedEvent.inbound_offset
    )
    rows = session.execute(
        select(
            RejectedEvent.inbound_topic,
            RejectedEvent.inbound_partition,
            RejectedEvent.inbound_offset,
        ).where(position.in_(list(keys)))
    )
    return {(t, p, o) for t, p, o in rows}


REJECTIONS: Table[Position, RejectedEvent] = Table(
    parse_rejection, stored_positions, lambda session, row: session.add(row)
)


def rejection_sink(
    conn: KafkaConn, topic: str, group: str, sessions: sessionmaker[Session]
) -> TopicSink[Position, RejectedEvent]:
    return TopicSink(conn, topic, group, sessions, REJECTIONS, name="rejections")


class RejectedOut(BaseModel):
    id: int
    event_id: str | None
    code: str
    detail: str
    rejected_at: datetime


class RejectedPage(BaseModel):
    items: list[RejectedOut]
    next_after: int | None


@router.get(
    "/rejected",
    response_model=RejectedPage,
    summary="List this agency's rejected events and why",
    description="Events the relay dead-lettered that claimed to come from the calling agency, "
    "oldest first: the reason code (`malformed`, `unknown_agency`, `unsigned`, `bad_signature`, "
    "`seal_mismatch`, `stale`, `replayed`, `unknown_type`, `schema`, `oversized`) and a "
    "description that never repeats the event's content. Records that do not open "
    "(`unsealed`, `unreadable`, `erased`) name no agency, as nothing in them is verified, and "
    "are not listed. Page with `after` = the previous page's `next_after`.",
    responses={
        401: {"description": "Missing or invalid API key"},
        403: {"description": "Not an agency's key"},
    },
)
def list_rejected(
    principal: AgencyPrincipal,
    session: SessionDep,
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="Return rows after this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    code: Annotated[str | None, Query(max_length=32, description="Only this reason")] = None,
) -> RejectedPage:
    query = (
        select(RejectedEvent)
        .where(RejectedEvent.agency_id == principal.subject, RejectedEvent.id > after)
        .order_by(RejectedEvent.id)
        .limit(limit)
    )
    if code is not None:
        query = query.where(RejectedEvent.code == code)
    rows = list(session.scalars(query))
    items = [
        RejectedOut(
            id=r.id, event_id=r.event_id, code=r.code, detail=r.detail, rejected_at=r.rejected_at
        )
        for r in rows
    ]
    return RejectedPage(items=items, next_after=rows[-1].id if len(rows) == limit else None)
