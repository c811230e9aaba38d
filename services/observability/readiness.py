"""Readiness checks: is each dependency reachable now? Each within a short timeout.

A check is an ``async () -> bool``; ``readiness`` runs them side by side and answers a name →
true/false map, a check that raises or overruns its timeout being false. Nothing here blocks
the event loop: Kafka is asked through the process's own (already authenticated) client, OPA
over HTTP, and the database's ``SELECT 1`` runs in a worker thread, at most one at a time (a
hung database does not pile up threads, probe after probe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

Check = Callable[[], Awaitable[bool]]
Ready = Callable[[], Awaitable[dict[str, bool]]]

CHECK_TIMEOUT_S = 2.0


async def readiness(
    checks: Mapping[str, Check], *, timeout_s: float = CHECK_TIMEOUT_S
) -> dict[str, bool]:
    """Every check, concurrently; false for one that fails, raises or takes over ``timeout_s``."""

    async def one(check: Check) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                return bool(await check())
        except Exception:  # unreachable, whatever the reason: the probe says false, not 500
            return False

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    return dict(zip(names, results, strict=True))


def kafka_check(metadata: Callable[[], Awaitable[object]]) -> Check:
    """Kafka answers a metadata request on the process's own connection (``metadata``: e.g. a
    consumer's ``topics`` or a producer's ``client.fetch_all_metadata``)."""

    async def check() -> bool:
        await metadata()
        return True

    return check


def database_check(engine: Engine) -> Check:
    """The database answers ``SELECT 1`` (in a thread; one probe in flight at most)."""
    pending: asyncio.Future[None] | None = None

    def select_one() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def check() -> bool:
        nonlocal pending
        if pending is None or pending.done():
            pending = asyncio.ensure_future(asyncio.to_thread(select_one))
        # Shielded: a timed-out probe leaves the thread's future for the next probe to await.
        await asyncio.shield(pending)
        return True

    return check


def sessions_check(sessions: sessionmaker[Session]) -> Check:
    """``database_check`` of the engine a worker's sessions are bound to."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the sessions are not bound to one engine")
    return database_check(bind)


class OpaCheck:
    """OPA's ``/health`` answers 200 (policies loaded). One HTTP client for the process."""

    def __init__(self, base_url: str) -> None:
        self._url = base_url.rstrip("/") + "/health"
        self._client = httpx.AsyncClient(timeout=CHECK_TIMEOUT_S)

    async def __call__(self) -> bool:
        response = await self._client.get(self._url)
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._client.aclose()


def standard_checks(
    *, metadata: Callable[[], Awaitable[object]], engine: Engine, opa: Check
) -> dict[str, Check]:
    """The checks every Accord process answers on ``/readyz``: ``kafka`` (a metadata request on
    the process's own client), ``database`` and ``opa``. A worker (the sink) serves them with
    ``serve_health(host, port, lambda: readiness(checks), stop)``."""
    return {"kafka": kafka_check(metadata), "database": database_check(engine), "opa": opa}
