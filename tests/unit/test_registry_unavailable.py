"""A registry database that cannot be read is an outage to wait out, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.broker.registry import RegistryUnavailable, SqlRegistry
from services.db import make_engine, make_sessionmaker
from services.referrals import service as referrals


def test_unreadable_registry_database_is_registry_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "accord.db"  # SQLite cannot open it
    registry = SqlRegistry(
        make_sessionmaker(make_engine(f"sqlite:///{missing}")), referrals.addressed_payloads
    )
    with pytest.raises(RegistryUnavailable):
        registry.snapshot()
