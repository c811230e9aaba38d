"""A slow database never stalls the API's event loop: while a publish waits on a table that
another connection holds locked, a request that needs neither database nor Kafka answers at
once. (Before the handlers' database work moved off the loop, it waited for the lock too.)"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import transaction
from tests.support.events import cloudevent

pytestmark = pytest.mark.integration

HOLD_S = 4.0  # how long the agencies table stays locked


async def test_a_publish_waiting_on_a_locked_table_does_not_stall_other_requests(
    api: str, database: str, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        key = issue_credential(session=session, role=Role.AGENCY, subject="harbor-outreach")
    event = cloudevent("harbor-outreach", "sv-stall", {"survivor_name": "S", "age": 30})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents+json"}
    async with httpx.AsyncClient(base_url=api, timeout=60) as http:
        assert (await http.get("/openapi.json")).status_code == 200  # built once, then cached
        locker = psycopg.connect(database.replace("postgresql+psycopg", "postgresql"))
        try:
            locker.execute("LOCK TABLE agencies IN ACCESS EXCLUSIVE MODE")
            # Released from a thread: were the loop blocked, nothing on it could release it.
            release = threading.Timer(HOLD_S, locker.rollback)
            release.start()
            locked_at = time.monotonic()
            publish = asyncio.create_task(http.post("/v1/events", json=event, headers=headers))
            await asyncio.sleep(0.5)  # the publish is in its handler, waiting for the lock
            docs = await http.get("/openapi.json")
            # Timed from the lock, not from the request: a blocked loop would delay the sleep
            # above as much as the request (this test and the API share the loop).
            answered = time.monotonic() - locked_at
            assert docs.status_code == 200
            assert not publish.done(), "the publish should still be waiting for the lock"
            assert answered < HOLD_S / 2, f"/openapi.json answered {answered:.1f} s after the lock"
            published = await publish
            release.join()
        finally:
            locker.close()
    assert published.status_code == 202, published.text
    assert time.monotonic() - locked_at >= HOLD_S  # it really waited for the lock
