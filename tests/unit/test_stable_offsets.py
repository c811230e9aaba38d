"""Reading an OffsetFetch v7 answer (services/kafka/offsets.py); the request against
the real broker is in tests/integration/test_relay_instances.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError

from services.kafka.offsets import Unstable, committed_offset

TP = TopicPartition("in", 1)


def answer(offset: int, error: int = 0, top_error: int = 0) -> SimpleNamespace:
    partitions: list[tuple[int, int, int, str, int, dict[int, bytes]]] = [
        (0, 7, -1, "", 0, {}),
        (1, offset, -1, "", error, {}),
    ]
    return SimpleNamespace(error_code=top_error, topics=[("in", partitions, {})])


def test_the_partitions_offset_is_read_and_minus_one_is_none() -> None:
    assert committed_offset(answer(42), TP) == 42
    assert committed_offset(answer(-1), TP) is None


def test_pending_transactional_offsets_ask_for_a_retry_and_other_errors_raise() -> None:
    with pytest.raises(Unstable):
        committed_offset(answer(41, error=88), TP)
    with pytest.raises(GroupAuthorizationFailedError):
        committed_offset(answer(0, top_error=30), TP)
