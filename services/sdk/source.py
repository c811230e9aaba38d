"""Where records come from: the partner's Kafka topic or the HTTP feed, behind one protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class RawItem:
    """One record as it is on the partner's topic (still sealed), and how to acknowledge it."""

    delivery_id: str
    record: bytes
    token: Any  # the source's own acknowledgement handle (a cursor, an offset)


class Source(Protocol):
    async def fetch(self, *, wait_s: float) -> list[RawItem]:
        """The next records, in order; waits up to ``wait_s`` for a first one."""
        ...

    async def ack(self, item: RawItem) -> None:
        """Acknowledge ``item`` and everything fetched before it (durably)."""
        ...

    async def reset(self) -> None:
        """Go back to the acknowledged position: what was not acknowledged comes again."""
        ...

    async def close(self) -> None: ...
