"""Property, against the real OPA server: over random consents and events, no delivered field
lies outside what some active permit provision allows, and none lies inside a deny (R2, R10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from services import policy_data
from services.broker.pipeline.decide import build_input, parse_decision
from services.broker.pipeline.model import Agreement, InboundEvent, Recipient, SurvivorFacts
from services.settings import Settings
from services.vocabulary import SENSITIVE, Category, Purpose

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EVENT_TYPE = "accord.referral.made"
TYPES = ["shelter", "health", "victim_services", "legal_aid"]
PURPOSES = ["service_referral", "care_coordination", "safety_planning"]
CATEGORIES = [c.value for c in Category]
RELEASED: list[int] = []  # fields released per example, for the non-vacuity check


def ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


periods = st.sampled_from(
    [
        (NOW - timedelta(days=30), None),  # open-ended, in force
        (NOW - timedelta(days=30), NOW + timedelta(days=30)),  # in force
        (NOW - timedelta(days=30), NOW - timedelta(days=1)),  # expired
        (NOW + timedelta(days=1), None),  # not started
    ]
)

provisions = st.builds(
    lambda kind, types, named, purposes, categories, period: {
        "type": kind,
        "recipients": {"partners": ["p-1"] if named else [], "partner_types": types},
        "purposes": purposes,
        "categories": categories,
        "period": {"start": ts(period[0]), "end": ts(period[1]) if period[1] else None},
    },
    st.sampled_from(["permit", "permit", "deny"]),
    st.lists(st.sampled_from([*TYPES, "*"]), max_size=2, unique=True),
    st.booleans(),
    st.lists(st.sampled_from([*PURPOSES, "*"]), min_size=1, max_size=2, unique=True),
    st.lists(st.sampled_from([*CATEGORIES, "*"]), min_size=1, max_size=4, unique=True),
    periods,
)

consents = st.lists(
    st.builds(
        lambda i, status, provs: {
            "id": f"c-{i}",
            "version": 1,
            "status": status,
            "recorded_by": {"role": "self"},
            "provisions": provs,
        },
        st.integers(0, 1000),
        st.sampled_from(["active", "active", "revoked"]),
        st.lists(provisions, min_size=1, max_size=4),
    ),
    max_size=3,
    unique_by=lambda c: c["id"],
)


def matches(p: dict[str, Any], partner_type: str, purpose: str) -> bool:
    r = p["recipients"]
    to_me = (
        "p-1" in r["partners"] or partner_type in r["partner_types"] or "*" in r["partner_types"]
    )
    return to_me and (purpose in p["purposes"] or "*" in p["purposes"])


def in_force(p: dict[str, Any]) -> bool:
    start = datetime.fromisoformat(p["period"]["start"])
    end = p["period"]["end"]
    return start <= NOW and (end is None or NOW < datetime.fromisoformat(end))


def allowed(consents: list[dict[str, Any]], partner_type: str, purpose: str, category: str) -> bool:
    live = [p for c in consents if c["status"] == "active" for p in c["provisions"] if in_force(p)]
    relevant = [p for p in live if matches(p, partner_type, purpose)]
    permitted = any(
        p["type"] == "permit"
        and (category in p["categories"] or ("*" in p["categories"] and category not in SENSITIVE))
        for p in relevant
    )
    denied = any(
        p["type"] == "deny" and (category in p["categories"] or "*" in p["categories"])
        for p in relevant
    )
    return permitted and not denied


@pytest.fixture(scope="module")
def opa(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=settings.opa_base_url, timeout=5)


# Releases need an in-force permit matching the partner, purpose and a needed category:
# about 7 % of examples. With 250 the guard below once failed CI with 9 releases; 600 gave
# 34-53 in four runs, in a few seconds.
@hsettings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    consents=consents,
    partner_type=st.sampled_from(TYPES),
    purpose=st.sampled_from(PURPOSES),
    fields=st.sets(
        st.sampled_from(sorted(policy_data.classification(Settings().policies_dir)[EVENT_TYPE])),
        min_size=1,
    ),
)
def test_R2_R10_released_fields_are_inside_a_permit_and_outside_every_deny(
    opa: httpx.Client,
    settings: Settings,
    consents: list[dict[str, Any]],
    partner_type: str,
    purpose: str,
    fields: set[str],
) -> None:
    classification = policy_data.classification(settings.policies_dir)[EVENT_TYPE]
    event = InboundEvent(
        "e-1", EVENT_TYPE, "harbor-outreach", "sv-1", NOW, dict.fromkeys(fields), 30
    )
    # An agreement covering everything, so that only consent decides here.
    recipient = Recipient(
        "p-1",
        partner_type,
        purpose,
        "state-a",
        "active",
        True,
        False,
        NOW + timedelta(days=365),
        (
            Agreement(
                "mou",
                tuple(p.value for p in Purpose),
                tuple(CATEGORIES),
                NOW - timedelta(days=365),
                NOW + timedelta(days=365),
            ),
        ),
    )
    item = build_input(
        event, recipient, jurisdiction="state-a", facts=SurvivorFacts(tuple(consents)), now=NOW
    )
    answer = opa.post("/v1/data/accord/decision/batch", json={"input": {"items": [item]}})
    answer.raise_for_status()
    decision = parse_decision(answer.json()["result"][0], event_fields=sorted(fields))
    for field in decision.fields:
        assert allowed(consents, partner_type, purpose, classification[field]), field
    RELEASED.append(len(decision.fields))


def test_the_property_saw_releases_and_refusals() -> None:
    """Guard against a vacuous property: the examples above released and withheld fields."""
    assert sum(1 for n in RELEASED if n > 0) >= 10
    assert sum(1 for n in RELEASED if n == 0) >= 10
