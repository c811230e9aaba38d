"""One event from an agency to partners through the real Kafka, OPA and PostgreSQL.

A module-scoped relay runs against the session's topics; the referral below is published
once and every test reads its own conclusion from the same deliveries and decision records.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.settings import Settings
from tests.support.events import Outcome, cloudevent, consent_change, publish_and_collect
from tests.support.registry import permit

pytestmark = pytest.mark.integration

SURVIVOR = "sv-int-adult"
REFERRAL = {
    "survivor_name": "A. Example",
    "age": 24,
    "phone": "+1-555-0100",
    "service_needs": ["housing"],
    "referral_reason": "needs safe housing",
    "shelter_address": "12 Hidden Lane",
    "hiv_status": "negative",
    "immigration_status": "pending",
    "narrative": "own account",
    "caseworker_notes_internal": "internal",
    "nickname": "not in any classification",
}
PARTNERS = ["lighthouse-shelter", "metro-police", "northside-clinic"]


@pytest.fixture(scope="module")
async def referral(settings: Settings, producer: AIOKafkaProducer, relay: None) -> Outcome:
    # The survivor consents to shelters and health partners, for all ordinary categories plus
    # HIV status; nothing for law enforcement.
    await producer.send_and_wait(
        settings.topic_consents,
        consent_change(
            settings,
            SURVIVOR,
            permit(
                ["shelter", "health"], ["service_referral", "care_coordination"], ["*", "hiv_sti"]
            ),
        ),
        key=SURVIVOR.encode(),
    )
    event = cloudevent("harbor-outreach", SURVIVOR, REFERRAL)
    return await publish_and_collect(settings, producer, event, PARTNERS)


def withheld_rules(decision: dict[str, Any], field: str) -> list[str]:
    return next(w["rules"] for w in decision["withheld"] if w["field"] == field)


def test_every_subscribed_partner_gets_exactly_one_decision(referral: Outcome) -> None:
    assert sorted(referral.decisions) == PARTNERS


def test_partner_receives_exactly_the_permitted_fields(referral: Outcome) -> None:
    for partner, decision in referral.decisions.items():
        got = referral.deliveries[partner]
        if decision["outcome"] == "deny":
            assert got == [], partner
            continue
        assert len(got) == 1, partner
        assert sorted(got[0]["data"]) == decision["released"]
        # ...with the values the agency published, untouched.
        assert all(got[0]["data"][f] == REFERRAL[f] for f in decision["released"])
    shelter = referral.deliveries["lighthouse-shelter"][0]["data"]
    assert {"survivor_name", "service_needs"} <= set(shelter)


def test_R1_unclassified_field_never_reaches_a_partner(referral: Outcome) -> None:
    for partner, decision in referral.decisions.items():
        assert "R1" in withheld_rules(decision, "nickname"), partner
        assert all("nickname" not in d["data"] for d in referral.deliveries[partner])


def test_R6_partner_type_without_need_to_know_gets_none_of_the_category(referral: Outcome) -> None:
    # Same consent (names hiv_sti) and both agreements cover hiv_sti; only need-to-know differs.
    assert "hiv_status" not in referral.deliveries["lighthouse-shelter"][0]["data"]
    assert "R6" in withheld_rules(referral.decisions["lighthouse-shelter"], "hiv_status")
    assert referral.deliveries["northside-clinic"][0]["data"].get("hiv_status") == "negative"


def test_R7_shelter_location_and_internal_fields_never_leave(referral: Outcome) -> None:
    for partner in PARTNERS:
        for delivery in referral.deliveries[partner]:
            assert "shelter_address" not in delivery["data"]
            assert "caseworker_notes_internal" not in delivery["data"]


def test_R4_adult_law_enforcement_without_consent_gets_nothing(referral: Outcome) -> None:
    assert referral.decisions["metro-police"]["outcome"] == "deny"
    assert referral.deliveries["metro-police"] == []


def test_decision_records_name_rules_and_revision_but_no_values(referral: Outcome) -> None:
    for decision in referral.decisions.values():
        assert decision["policy_revision"].startswith("sha256:")
        assert decision["reasons"]
        text = json.dumps(decision)
        assert "Hidden Lane" not in text and "negative" not in text and "A. Example" not in text
