"""A partition's committed offset read with KIP-447's ``require_stable`` (OffsetFetch v7).

When a relay instance takes a partition over, the previous owner's last transaction may have
committed a moment ago: its offsets are written, but the group coordinator applies them after
the transaction markers, asynchronously. A plain OffsetFetch (all aiokafka sends) can return
the offset from before that transaction, and the new owner would read its records again (the
replay guard refuses them, but the agency sees false ``replayed`` rejections). With
``require_stable`` the coordinator answers UNSTABLE_OFFSET_COMMIT while such offsets are
pending, and the caller asks again. aiokafka has no call for it: the request is declared in
``services/kafka/protocol.py`` with every other hand-declared one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, for_code

from services.kafka.protocol import NO_OFFSET, UNSTABLE_OFFSET_COMMIT, StableOffsetFetchRequest


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
