"""Read-only access to the policy data shipped in ``policies/`` (the same files OPA loads).

Python never decides a release with it: it names things, such as the category of a released
field in a survivor's accounting of disclosures, and reads the limits the API applies when it
records something (the longest a consent may last in a jurisdiction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
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


@dataclass(frozen=True)
class ConsentLimits:
    """How long a consent may last in a jurisdiction, and how long before its end the
    advocate is asked to renew it (time-limited consent, docs/safe-contact.md)."""

    max_duration: timedelta
    renewal_notice: timedelta


def consent_limits(policies: Path, jurisdiction: str) -> ConsentLimits:
    """``consent_duration`` of the jurisdiction: ``default`` overlaid by ``overrides.<id>``,
    as the policy's ``accord.jurisdiction.settings`` overlays them (R12). The API applies it
    when a consent is recorded; the policy then ends the consent at its period's end (R3)."""
    doc = _load(policies / "accord" / "jurisdictions" / "data.json")
    merged = {
        **doc["default"].get("consent_duration", {}),
        **doc["overrides"].get(jurisdiction, {}).get("consent_duration", {}),
    }
    return ConsentLimits(
        max_duration=timedelta(days=int(merged["max_days"])),
        renewal_notice=timedelta(days=int(merged["renewal_notice_days"])),
    )


def adult_restricted_types(policies: Path, jurisdiction: str) -> frozenset[str]:
    """The partner types R4 restricts for adults in a jurisdiction (``default`` overlaid by
    ``overrides.<id>``): only a consent naming them lets them receive anything."""
    doc = _load(policies / "accord" / "jurisdictions" / "data.json")
    merged = {**doc["default"], **doc["overrides"].get(jurisdiction, {})}
    return frozenset(merged["adult_restricted_partner_types"])
