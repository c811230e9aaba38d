"""``accord keys …``: KEK status, re-wrap after a rotation, a new KEK (``keys erase`` is
services/consent/erasure.py: erasing a survivor ends their consents too)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable

from services.atrest import store
from services.atrest.keys import kek_ring
from services.db import make_engine, make_sessionmaker, transaction
from services.settings import Settings


def new_kek_entry(key_id: str) -> str:
    """An ``id:base64key`` entry for ACCORD_KEKS: 32 random bytes. Shown once; keep it in the
    secret store the processes read their configuration from, never in the repository."""
    if not key_id or ":" in key_id or "," in key_id:
        raise ValueError("a KEK id is non-empty, without ':' or ','")
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def status_command(s: Settings, echo: Callable[[str], None]) -> int:
    """DEKs per KEK; exit 1 while any live DEK is under a KEK other than the active one."""
    ring = kek_ring(s)
    engine = make_engine(s.sqlalchemy_url)
    try:
        with transaction(make_sessionmaker(engine, kek_ring=ring)) as session:
            counts = store.status(session)
    finally:
        engine.dispose()
    echo(f"active KEK {ring.active_id}; configured: {', '.join(sorted(ring.keks))}")
    for kek_id, n in sorted(counts.items()):
        echo(f"{kek_id:<24} {n} data key(s)")
    behind = sum(n for k, n in counts.items() if k not in (ring.active_id, "(erased)"))
    echo("every data key is under the active KEK" if not behind else f"{behind} to re-wrap")
    return 0 if not behind else 1


def rewrap_command(s: Settings, echo: Callable[[str], None], *, batch: int, pause_s: float) -> int:
    """Re-wrap every DEK under the active KEK, ``batch`` per transaction, so services keep
    running (each batch locks only its own rows, briefly); how many were re-wrapped."""
    ring = kek_ring(s)
    engine = make_engine(s.sqlalchemy_url)
    sessions = make_sessionmaker(engine, kek_ring=ring)
    total = 0
    try:
        while True:
            with transaction(sessions) as session:
                n = store.rewrap(session, limit=batch)
            total += n
            if n < batch:
                break
            echo(f"re-wrapped {total}")
            time.sleep(pause_s)
    finally:
        engine.dispose()
    echo(f"re-wrapped {total} data key(s) under KEK {ring.active_id}")
    return total
