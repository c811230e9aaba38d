"""Python and the policy data must speak the same vocabulary (rules.md), and every event
schema's fields must be classified, or a field would be silently withheld (R1)."""

from __future__ import annotations

import json

from services import policy_data
from services.broker.pipeline.validate import SchemaRegistry
from services.settings import REPO_ROOT
from services.vocabulary import SENSITIVE, Category, PartnerType, Purpose

VOCABULARY = json.loads((REPO_ROOT / "policies/accord/vocabulary/data.json").read_text())


def test_partner_types_purposes_and_categories_match_the_policy_data() -> None:
    assert sorted(VOCABULARY["partner_types"]) == sorted(p.value for p in PartnerType)
    assert sorted(VOCABULARY["purposes"]) == sorted(p.value for p in Purpose)
    assert sorted(VOCABULARY["categories"]) == sorted(c.value for c in Category)
    assert sorted(VOCABULARY["sensitive_categories"]) == sorted(c.value for c in SENSITIVE)


def test_every_schema_field_is_classified_into_a_known_category(schemas: SchemaRegistry) -> None:
    table = policy_data.classification(REPO_ROOT / "policies")
    event_types = sorted(p.stem for p in (REPO_ROOT / "schemas" / "events").glob("*.json"))
    assert len(event_types) >= 10
    known = {c.value for c in Category}
    for event_type in event_types:
        fields = schemas.fields(event_type)
        assert fields, event_type
        assert sorted(table[event_type]) == fields, event_type
        assert set(table[event_type].values()) <= known, event_type
