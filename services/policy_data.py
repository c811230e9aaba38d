"""Read-only access to the policy data shipped in ``policies/`` (the same files OPA loads).

Python never decides with it: it only names things, such as the category of a released field
in a survivor's accounting of disclosures.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from services.consent.disclosures import Categorize


@cache
def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def classification(policies: Path) -> dict[str, dict[str, str]]:
    """Event type → field → data category."""
    doc = _load(policies / "accord" / "classification" / "data.json")
    return dict(doc["event_types"])


def categorizer(policies: Path) -> Categorize:
    table = classification(policies)

    def categorize(event_type: str, field: str) -> str | None:
        return table.get(event_type, {}).get(field)

    return categorize
