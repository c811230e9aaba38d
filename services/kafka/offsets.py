"""A partition's committed offset read with KIP-447's ``require_stable`` (OffsetFetch v7).

When a relay instance takes a partition over, the previous owner's last transaction may have
committed a moment ago: its offsets are written, but the group coordinator applies them after
the transaction markers, asynchronously. A plain OffsetFetch (all aiokafka sends) can return
the offset from before that transaction, and the new owner would read its records again (the
replay guard refuses them, but the agency sees false ``replayed`` rejections). With
``require_stable`` the coordinator answers UNSTABLE_OFFSET_COMMIT while such offsets are
pending, and the caller asks again. aiokafka has no call for it, so the request is declared
here with aiokafka's protocol types, as ``services/kafka/acls.py`` does for ACLs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

UNSTABLE_OFFSET_COMMIT = 88
NO_OFFSET = -1


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class StableOffsetFetchRequest(Request[OffsetFetchRequest_v7]):  # type: ignore[misc]
    API_KEY = 9

    def __init__(self, group_id: str, tp: TopicPartition) -> None:
        self._group_id = group_id
        self._tp = tp

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        topics: list[tuple[str, list[int], dict[int, bytes]]] = [
            (self._tp.topic, [self._tp.partition], {})
        ]
        return request_struct_class(self._group_id, topics, True, {})


class Unstable(Exception):
    """A transaction's offsets for the partition are pending: ask again (aiokafka does not
    know error 88, UNSTABLE_OFFSET_COMMIT)."""


def committed_offset(response: Any, tp: TopicPartition) -> int | None:
    """The offset in an OffsetFetch v7 response (None: nothing committed). Raises
    ``Unstable`` for the caller to retry, or the response's error."""
    if response.error_code:
        raise for_code(response.error_code)()
    for name, partitions, _ in response.topics:
        for index, offset, _epoch, _meta, error, _ in partitions:
            if name == tp.topic and index == tp.partition:
                if error == UNSTABLE_OFFSET_COMMIT:
                    raise Unstable
                if error:
                    raise for_code(error)()
                return None if offset == NO_OFFSET else int(offset)
    raise KafkaError(f"no committed offset in the answer for partition {tp.partition}")


async def stable_committed(
    consumer: AIOKafkaConsumer, tp: TopicPartition, *, timeout_s: float = 30.0
) -> int | None:
    """``tp``'s committed offset once no transaction's offsets for it are pending."""
    coordinator = consumer._coordinator  # aiokafka's group coordinator: no public call for this
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        await coordinator.ensure_coordinator_known()
        response = await coordinator._send_req(StableOffsetFetchRequest(coordinator.group_id, tp))
        try:
            return committed_offset(response, tp)
        except Unstable:
            if loop.time() > deadline:
                raise KafkaError(f"partition {tp.partition}'s offsets stayed unstable") from None
        await asyncio.sleep(0.05)  # the markers are being written: a few milliseconds
