"""The test registry: agencies, partners (with their agreements and subscriptions) and the
provisions that permit them, as the integration tests load it (``REGISTRY``)."""

from __future__ import annotations

from typing import Any

from services.registry.schemas import RegistryIn
from services.vocabulary import Category
from tests.support.keys import with_keys

MOU = {"valid_from": "2026-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}


TRAINED = "2030-01-01T00:00:00Z"


EVENT_TYPES = ["accord.referral.made", "accord.case.identified"]


def partner(
    pid: str,
    ptype: str,
    purpose: str,
    categories: list[str],
    *,
    event_types: list[str] = EVENT_TYPES,
    jurisdiction: str = "state-a",
    mou: dict[str, str] = MOU,
) -> dict[str, Any]:
    agreement = {"id": f"mou-{pid}", "purposes": [purpose], "categories": categories, **mou}
    return {
        "id": pid,
        "name": pid,
        "type": ptype,
        "jurisdiction": jurisdiction,
        "vetted": True,
        "training_attested_until": TRAINED,
        "agreements": [agreement],
        "subscriptions": [{"id": f"sub-{pid}", "purpose": purpose, "event_types": event_types}],
    }


# Partners of the rule-by-rule tests (test_rules_end_to_end.py): they subscribe to other event
# types than the partners above, and their agreements cover every category, so that each
# test isolates the rule it is about.
RULE_TYPES = [
    "accord.screening.completed",
    "accord.safety.concern_raised",
    "accord.service_need.recorded",
]


ALL_CATEGORIES = [c.value for c in Category if c is not Category.SHELTER_LOCATION]


LAPSED = {"valid_from": "2025-01-01T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z"}


RULE_ROWS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("rules-vs", "victim_services", "care_coordination", {}),
    ("rules-bh", "behavioral_health", "care_coordination", {}),
    ("rules-housing", "housing", "service_referral", {}),
    ("rules-police-a", "law_enforcement", "investigation", {}),
    ("rules-police-b", "law_enforcement", "investigation", {"jurisdiction": "state-b"}),
    ("rules-cps-a", "child_welfare", "mandated_report", {}),
    ("rules-cps-b", "child_welfare", "mandated_report", {"jurisdiction": "state-b"}),
    ("rules-ems", "emergency_services", "emergency_response", {}),
    ("rules-lapsed", "legal_aid", "care_coordination", {"mou": LAPSED}),
]


RULE_PARTNERS = [
    partner(pid, ptype, purpose, ALL_CATEGORIES, event_types=RULE_TYPES, **extra)
    for pid, ptype, purpose, extra in RULE_ROWS
]


REGISTRY = RegistryIn.model_validate(
    with_keys(
        {
            "agencies": [
                {"id": "harbor-outreach", "name": "Harbor Outreach", "jurisdiction": "state-a"},
                {"id": "valley-school", "name": "Valley School", "jurisdiction": "state-b"},
            ],
            "partners": [
                partner(
                    "lighthouse-shelter",
                    "shelter",
                    "service_referral",
                    [
                        "identity",
                        "contact",
                        "demographics",
                        "service_need",
                        "case_status",
                        "hiv_sti",
                    ],
                ),
                partner(
                    "northside-clinic",
                    "health",
                    "care_coordination",
                    ["identity", "contact", "demographics", "service_need", "health", "hiv_sti"],
                ),
                partner(
                    "metro-police",
                    "law_enforcement",
                    "investigation",
                    ["identity", "contact", "demographics", "victimization", "case_status"],
                ),
                *RULE_PARTNERS,
            ],
        }
    )
)


def permit(types: list[str], purposes: list[str], categories: list[str]) -> dict[str, Any]:
    return {
        "type": "permit",
        "recipients": {"partners": [], "partner_types": types},
        "purposes": purposes,
        "categories": categories,
        "period": {"start": "2026-01-01T00:00:00Z", "end": None},
    }
