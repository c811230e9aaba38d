"""HTTP pull feed: a partner without a Kafka client reads its own topic over HTTP.

``GET /v1/feed`` returns the records of the caller's partner topic exactly as the relay wrote
them (still sealed: the server never opens them), read with ``read_committed``, each with its
delivery id and an opaque cursor just past it. ``POST /v1/feed/ack`` acknowledges up to a
cursor, or a list of delivery ids. A ``GET`` without a cursor starts at the acknowledged
position, so whatever is not acknowledged comes back: delivery is at least once, and a
partner de-duplicates by delivery id.

No table holds feed state. Acknowledgements are Kafka offset commits of a per-partner
consumer group (``accord.feed.<partner id>``); deliveries acknowledged by id ahead of an
unacknowledged one are kept, by offset, in the commit's metadata until the gap closes.
The partner is the key's subject: a partner can only ever read its own topic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.kafka import topics
from services.kafka.client import API, FEED_GROUP_PREFIX, kafka
from services.settings import Settings

router = APIRouter(prefix="/v1/feed", tags=["feed"])

PartnerPrincipal = Annotated[Principal, Depends(require(Role.PARTNER))]

MAX_WAIT_S = 20.0
MAX_LIMIT = 500
CURSOR_VERSION = 1
# Offsets acknowledged ahead of a gap, kept in the commit metadata (Kafka allows 4096 bytes).
MAX_ACKED_AHEAD = 300
# An ack by delivery id looks this far past the acknowledged position, per partition.
MAX_SCAN = 10_000
_POLL_MS = 100
_CATCH_UP_S = 5.0  # how long a read without `wait` may take to reach the end of the topic

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The key is not a partner's"},
    503: {"description": "Kafka unavailable; retry"},
}


def feed_group(partner_id: str) -> str:
    return f"{FEED_GROUP_PREFIX}{partner_id}"


# --- cursors ---------------------------------------------------------------------------------


class CursorError(ValueError):
    pass


def encode_cursor(partner_id: str, positions: dict[int, int]) -> str:
    doc = {"v": CURSOR_VERSION, "p": partner_id, "o": {str(k): v for k, v in positions.items()}}
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, partner_id: str) -> dict[int, int]:
    """Partition → next offset; raises ``CursorError`` if malformed or another partner's."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise CursorError("The cursor is not one this feed issued.") from exc
    if not isinstance(doc, dict) or doc.get("v") != CURSOR_VERSION:
        raise CursorError("The cursor is not one this feed issued.")
    if doc.get("p") != partner_id:
        raise CursorError("The cursor belongs to another partner's feed.")
    offsets = doc.get("o")
    if not isinstance(offsets, dict):
        raise CursorError("The cursor is not one this feed issued.")
    out: dict[int, int] = {}
    for k, v in offsets.items():
        if not (isinstance(k, str) and k.isdigit() and type(v) is int and v >= 0):
            raise CursorError("The cursor is not one this feed issued.")
        out[int(k)] = v
    return out


# --- committed state -------------------------------------------------------------------------


@dataclass
class Acked:
    """The acknowledged position of one partition, and what is acknowledged beyond it."""

    offset: int = 0
    ahead: set[int] = field(default_factory=set)

    def metadata(self) -> str:
        return json.dumps({"a": sorted(o for o in self.ahead if o >= self.offset)})

    @classmethod
    def parse(cls, value: OffsetAndMetadata | None) -> Acked:
        if value is None or value.offset < 0:
            return cls()
        try:
            ahead = {int(o) for o in json.loads(value.metadata or "{}").get("a", [])}
        except (ValueError, TypeError, AttributeError):
            ahead = set()
        return cls(value.offset, {o for o in ahead if o >= value.offset})


def delivery_id_of(record: ConsumerRecord) -> str:
    """The id a partner de-duplicates by: the sealed header's, a notice's own, or the offset."""
    try:
        doc = json.loads(record.value)
        if isinstance(doc, dict):
            if isinstance(doc.get("delivery_id"), str):
                return str(doc["delivery_id"])
            if isinstance(doc.get("id"), str):
                return str(doc["id"])
    except (TypeError, ValueError):
        pass
    return f"{record.partition}:{record.offset}"


class Feed:
    """One partner's topic and its acknowledgement group, for one request."""

    def __init__(self, s: Settings, partner_id: str) -> None:
        self.s = s
        self.partner_id = partner_id
        self.topic = s.partner_topic(partner_id)
        self.group = feed_group(partner_id)

    @asynccontextmanager
    async def consumer(self, *, group: bool = False) -> AsyncIterator[AIOKafkaConsumer]:
        consumer = AIOKafkaConsumer(
            **kafka(self.s, API).kwargs(),
            group_id=self.group if group else None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            yield consumer
        finally:
            await consumer.stop()

    async def partitions(self) -> list[TopicPartition]:
        """The topic's partitions; none if it does not exist (yet)."""
        found = await topics.partitions(kafka(self.s, API), self.topic, timeout_s=1.0)
        return [TopicPartition(self.topic, p) for p in sorted(found)]

    async def acked(self, tps: list[TopicPartition]) -> dict[TopicPartition, Acked]:
        if not tps:
            return {}
        admin = AIOKafkaAdminClient(**kafka(self.s, API).kwargs())
        await admin.start()
        try:
            got = await admin.list_consumer_group_offsets(self.group, partitions=tps)
        finally:
            await admin.close()
        return {tp: Acked.parse(got.get(tp)) for tp in tps}

    async def commit(self, consumer: AIOKafkaConsumer, state: dict[TopicPartition, Acked]) -> None:
        consumer.assign(list(state))
        await consumer.commit({tp: (a.offset, a.metadata()) for tp, a in state.items()})


# --- reading ---------------------------------------------------------------------------------


class FeedItem(BaseModel):
    delivery_id: str = Field(description="De-duplicate by this: an item may come again.")
    cursor: str = Field(
        description="Opaque; acknowledging it acknowledges this item and all before."
    )
    sealed: bool = Field(description="A sealed delivery (open it); else a plain notice.")
    record: str = Field(description="The record exactly as on the partner's topic (JSON text).")


class FeedPage(BaseModel):
    items: list[FeedItem]
    cursor: str = Field(description="Where the next read continues (pass it as `cursor`).")


def _problem(status_code: int, message: str) -> HTTPException:
    return HTTPException(status_code, detail=message)


def _cursor_positions(
    cursor: str, partner_id: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    try:
        offsets = decode_cursor(cursor, partner_id)
    except CursorError as exc:
        raise _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    known = {tp.partition: tp for tp in tps}
    if not set(offsets) <= set(known):
        raise _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "The cursor is not for this feed.")
    return {known[p]: o for p, o in offsets.items()}


async def read(feed: Feed, *, cursor: str | None, limit: int, wait_s: float) -> FeedPage:
    async with feed.consumer() as consumer:
        tps = await feed.partitions()
        if not tps:
            return FeedPage(items=[], cursor=encode_cursor(feed.partner_id, {}))
        acked = await feed.acked(tps)
        start = {tp: a.offset for tp, a in acked.items()}
        if cursor:
            start.update(_cursor_positions(cursor, feed.partner_id, tps))
        consumer.assign(tps)
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        beginning = await consumer.beginning_offsets(tps)
        for tp in tps:  # records removed by retention: continue at the oldest one kept
            if start[tp] < beginning[tp]:
                consumer.seek(tp, beginning[tp])
                start[tp] = beginning[tp]
        end = await consumer.end_offsets(tps)

        positions = {tp.partition: start[tp] for tp in tps}
        items: list[FeedItem] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_s, 0.0)
        hard_deadline = loop.time() + max(wait_s, _CATCH_UP_S)
        while len(items) < limit:
            caught_up = all([await consumer.position(tp) >= end[tp] for tp in tps])
            now = loop.time()
            if now >= hard_deadline or (caught_up and (items or now >= deadline)):
                break
            batch = await consumer.getmany(
                *tps, timeout_ms=_POLL_MS, max_records=limit - len(items)
            )
            for tp in tps:
                for record in batch.get(tp, []):
                    positions[tp.partition] = record.offset + 1
                    if record.offset in acked[tp].ahead or record.value is None:
                        continue
                    items.append(
                        FeedItem(
                            delivery_id=delivery_id_of(record),
                            cursor=encode_cursor(feed.partner_id, positions),
                            sealed=_sealed(record.value),
                            record=record.value.decode("utf-8", errors="replace"),
                        )
                    )
        for tp in tps:
            positions[tp.partition] = max(positions[tp.partition], await consumer.position(tp))
        return FeedPage(items=items, cursor=encode_cursor(feed.partner_id, positions))


def _sealed(value: bytes) -> bool:
    try:
        doc = json.loads(value)
    except ValueError:
        return False
    return isinstance(doc, dict) and "box" in doc


@router.get(
    "",
    response_model=FeedPage,
    summary="Read your deliveries (sealed, exactly as on your topic), at least once",
    responses={**AUTH_RESPONSES, 422: {"description": "Malformed cursor, or another's"}},
)
async def get_feed(
    request: Request,
    partner: PartnerPrincipal,
    cursor: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="From a previous read; omit to start at your acknowledged position.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="Seconds to wait for a first item.")
    ] = 0,
) -> FeedPage:
    """The calling partner's deliveries after `cursor` (or its acknowledged position), each
    still sealed to the partner's key, as on its Kafka topic. Long-polls up to `wait`
    seconds for a first item. Unacknowledged deliveries come again: acknowledge them."""
    feed = Feed(request.app.state.settings, partner.subject)
    try:
        return await read(feed, cursor=cursor, limit=limit, wait_s=wait)
    except KafkaError as exc:
        raise _problem(
            status.HTTP_503_SERVICE_UNAVAILABLE, "The feed is unavailable; retry later."
        ) from exc


# --- acknowledging ---------------------------------------------------------------------------


class AckIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"delivery_ids": ["harbor-2026-000123/lighthouse-shelter"]}]
        },
    )
    cursor: str | None = Field(default=None, max_length=4096)
    delivery_ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_LIMIT)

    @model_validator(mode="after")
    def one_of(self) -> AckIn:
        if (self.cursor is None) == (self.delivery_ids is None):
            raise ValueError("give either a cursor or delivery_ids")
        return self


class AckOut(BaseModel):
    cursor: str = Field(description="The acknowledged position: a read without cursor starts here.")
    not_found: list[str] = Field(
        default=[],
        description="Ids that were not unacknowledged deliveries of yours (already "
        "acknowledged, or unknown); acknowledging them again is harmless.",
    )


_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


async def _scan(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], state: dict[TopicPartition, Acked]
) -> dict[TopicPartition, list[ConsumerRecord]]:
    """The records from the acknowledged position to the end (bounded), in order."""
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, state[tp].offset)
    end = await consumer.end_offsets(tps)
    out: dict[TopicPartition, list[ConsumerRecord]] = {tp: [] for tp in tps}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _CATCH_UP_S
    while loop.time() < deadline:
        pending = [
            tp for tp in tps if await consumer.position(tp) < end[tp] and len(out[tp]) < MAX_SCAN
        ]
        if not pending:
            break
        batch = await consumer.getmany(*pending, timeout_ms=_POLL_MS)
        for tp, records in batch.items():
            out[tp].extend(records)
    return out


async def acknowledge(feed: Feed, body: AckIn) -> AckOut:
    not_found: list[str] = []
    async with _locks[feed.partner_id]:
        tps = await feed.partitions()
        if not tps:
            if body.cursor:
                _cursor_positions(body.cursor, feed.partner_id, tps)
            return AckOut(cursor=encode_cursor(feed.partner_id, {}), not_found=not_found)
        state = await feed.acked(tps)
        if body.cursor is not None:
            for tp, offset in _cursor_positions(body.cursor, feed.partner_id, tps).items():
                if offset > state[tp].offset:  # an older cursor never moves the position back
                    state[tp].offset = offset
        else:
            wanted = set(body.delivery_ids or ())
            found: set[str] = set()
            async with feed.consumer() as consumer:
                records = await _scan(consumer, tps, state)
            for tp, recs in records.items():
                earlier = set(state[tp].ahead)
                for r in recs:
                    did = delivery_id_of(r)
                    if did in wanted and r.offset not in earlier:
                        state[tp].ahead.add(r.offset)
                        found.add(did)
                # Move the position over every acknowledged record at its front.
                for r in recs:
                    if r.offset not in state[tp].ahead:
                        break
                    state[tp].offset = r.offset + 1
            not_found = sorted(wanted - found)
        for a in state.values():
            a.ahead = {o for o in a.ahead if o >= a.offset}
            if len(a.ahead) > MAX_ACKED_AHEAD:
                raise _problem(
                    status.HTTP_409_CONFLICT,
                    "Too many deliveries acknowledged ahead of an unacknowledged one; "
                    "acknowledge the earlier ones, or by cursor.",
                )
        async with feed.consumer(group=True) as committer:
            await feed.commit(committer, state)
        positions = {tp.partition: a.offset for tp, a in state.items()}
    return AckOut(cursor=encode_cursor(feed.partner_id, positions), not_found=not_found)


@router.post(
    "/ack",
    response_model=AckOut,
    summary="Acknowledge deliveries: up to a cursor, or by delivery id (idempotent, durable)",
    responses={
        **AUTH_RESPONSES,
        409: {"description": "Too many acknowledged out of order"},
        422: {"description": "Malformed cursor, or another's; neither or both of cursor/ids"},
    },
)
async def ack(body: AckIn, request: Request, partner: PartnerPrincipal) -> AckOut:
    """Acknowledge everything up to a `cursor`, or single deliveries by `ids`; the position
    is committed in Kafka, so it survives restarts. Acknowledging twice does nothing more."""
    feed = Feed(request.app.state.settings, partner.subject)
    try:
        return await acknowledge(feed, body)
    except KafkaError as exc:
        raise _problem(
            status.HTTP_503_SERVICE_UNAVAILABLE, "Nothing was acknowledged; retry later."
        ) from exc
