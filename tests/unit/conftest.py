"""Fixtures of the unit tests (helpers: tests/support/)."""

from __future__ import annotations

import pytest

from services.broker.pipeline.validate import SchemaRegistry
from services.settings import REPO_ROOT


@pytest.fixture
def schemas() -> SchemaRegistry:
    return SchemaRegistry(REPO_ROOT / "schemas" / "events")
