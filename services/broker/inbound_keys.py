"""Where the relay gets the keys that open a poll's sealed inbound records (I/O).

One query per poll for the (survivor, generation) pairs its records name; the keys live only
as long as that poll, so an erasure committed anywhere holds from the next poll on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from services.atrest import store
from services.broker.pipeline.unseal import Keys
from services.broker.registry import RegistryUnavailable


class InboundKeys(Protocol):
    def private_keys(self, wanted: Iterable[tuple[str, int]]) -> Keys: ...


class SqlInboundKeys:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def private_keys(self, wanted: Iterable[tuple[str, int]]) -> Keys:
        wanted = set(wanted)
        if not wanted:
            return {}
        try:
            with self._sessions() as session:
                return store.inbound_private_keys(session, wanted)
        except DBAPIError as exc:  # the relay holds its poll and retries, as for the registry
            raise RegistryUnavailable(type(exc.orig).__name__) from exc


class StaticInboundKeys:
    """Keys given up front (unit tests of pure logic)."""

    def __init__(self, keys: Keys | None = None) -> None:
        self._keys = dict(keys or {})

    def private_keys(self, wanted: Iterable[tuple[str, int]]) -> Keys:
        return {k: self._keys[k] for k in wanted if k in self._keys}
