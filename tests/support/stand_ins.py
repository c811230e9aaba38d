"""Stand-ins for Kafka clients in unit tests of pure logic (never as proof of an integration)."""

from __future__ import annotations

from aiokafka import TopicPartition


class StandInConsumer:
    """A consumer's assignment and the seeks made on it."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self.assigned = assigned
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
