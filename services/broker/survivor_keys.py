"""Survivor keys of the records sealed on Kafka (I/O; the format is services/atrest/sealed.py):
the private keys the relay opens a poll's events and its consent view a batch's snapshots
with, and the public keys in-process publishers seal with.

The relay makes one query per poll (the view one per batch) for the (survivor, generation)
pairs its records name; the keys live only as long as that poll, so an erasure committed
anywhere holds from the next poll on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from services.atrest import sealed, store
from services.atrest.keys import kek_ring
from services.broker.pipeline.unseal import Keys
from services.broker.registry import RegistryUnavailable
from services.db import make_engine, make_sessionmaker
from services.events.cloudevents import SOURCE_PREFIX
from services.settings import Settings


class SurvivorKeys(Protocol):
    def private_keys(self, wanted: Iterable[tuple[str, int]]) -> Keys: ...


class SqlSurvivorKeys:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def private_keys(self, wanted: Iterable[tuple[str, int]]) -> Keys:
        wanted = set(wanted)
        if not wanted:
            return {}
        try:
            with self._sessions() as session:
                return store.survivor_private_keys(session, wanted)
        except DBAPIError as exc:  # the relay holds its poll and retries, as for the registry
            raise RegistryUnavailable(type(exc.orig).__name__) from exc


class StaticSurvivorKeys:
    """Keys given up front (unit tests of pure logic)."""

    def __init__(self, keys: Keys | None = None) -> None:
        self._keys = dict(keys or {})

    def private_keys(self, wanted: Iterable[tuple[str, int]]) -> Keys:
        return {k: self._keys[k] for k in wanted if k in self._keys}


class EventSealer:
    """Seals signed events for the inbound topic as an agency does, in process: with survivor
    public keys read from the database once per survivor (an agency outside gets them from
    ``GET /v1/events/keys/{survivor_id}``); and consent snapshots as the API does. For the
    demo, the benchmarks and the tests."""

    def __init__(self, sessions: sessionmaker[Session], engine: Engine | None = None) -> None:
        self._sessions = sessions
        self._engine = engine  # disposed by close() when this sealer created it
        self._public: dict[str, tuple[int, bytes]] = {}

    @classmethod
    def for_settings(cls, s: Settings) -> EventSealer:
        engine = make_engine(s.sqlalchemy_url)
        return cls(make_sessionmaker(engine, kek_ring=kek_ring(s)), engine)

    def public_key(self, survivor_id: str) -> tuple[int, bytes]:
        if survivor_id not in self._public:
            with self._sessions() as session:
                self._public[survivor_id] = store.survivor_public_key(session, survivor_id)
                session.commit()
        return self._public[survivor_id]

    def __call__(
        self, event: bytes, *, agency_id: str | None = None, survivor_id: str | None = None
    ) -> bytes:
        """``event`` sealed to its survivor; the ids are read from the event unless given
        (for records that are not valid events)."""
        if agency_id is None or survivor_id is None:
            doc = json.loads(event)
            agency_id = agency_id or str(doc["source"]).removeprefix(SOURCE_PREFIX)
            survivor_id = survivor_id or str(doc["subject"])
        generation, key = self.public_key(survivor_id)
        header = sealed.event_header(agency_id, survivor_id, generation)
        return sealed.seal(event, header, public_key=key)

    def snapshot(self, payload: bytes, *, survivor_id: str) -> bytes:
        """A consent snapshot sealed as the API's consent publisher seals it."""
        generation, key = self.public_key(survivor_id)
        header = sealed.snapshot_header(survivor_id, generation)
        return sealed.seal(payload, header, public_key=key)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def seal_all(s: Settings, events: Iterable[bytes]) -> list[bytes]:
    """Each event sealed to its survivor (keys from ``s``'s database), as agencies publish."""
    sealer = EventSealer.for_settings(s)
    try:
        return [sealer(value) for value in events]
    finally:
        sealer.close()


def subject_of(record: bytes) -> bytes:
    """The Kafka key of an inbound record, sealed or not: its survivor's id."""
    parsed = sealed.parse(record, sealed.EVENT)
    subject = (
        parsed.header.survivor_id if parsed is not None else str(json.loads(record)["subject"])
    )
    return subject.encode()
