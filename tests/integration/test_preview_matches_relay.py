"""The consent preview answers what the relay decides: same policy input (consents, an
imminent-danger declaration, a court order), same decision, partner by partner."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import make_engine, make_sessionmaker, transaction
from services.settings import Settings
from tests.integration.test_rules_end_to_end import SCREENING, permit
from tests.support.events import cloudevent, publish_and_collect
from tests.support.registry import RULE_PARTNERS

pytestmark = pytest.mark.integration

WATCHED = [p["id"] for p in RULE_PARTNERS]
COMPARED = ("released", "withheld", "basis", "reasons", "policy_revision")


@pytest.fixture(scope="module")
def keys(database: str) -> dict[str, str]:
    with transaction(make_sessionmaker(make_engine(database))) as session:
        return {
            "advocate": issue_credential(
                session=session,
                role=Role.ADVOCATE,
                subject="adv-preview",
                agency_id="harbor-outreach",
            ),
            "supervisor": issue_credential(
                session=session,
                role=Role.SUPERVISOR,
                subject="sup-preview",
                agency_id="harbor-outreach",
            ),
        }


async def test_preview_equals_the_relays_decision_with_a_declaration_and_a_court_order(
    api: str,
    relay: None,
    settings: Settings,
    producer: AIOKafkaProducer,
    keys: dict[str, str],
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    advocate = httpx.AsyncClient(
        base_url=api, headers={"Authorization": f"Bearer {keys['advocate']}"}, timeout=30
    )
    staff = httpx.AsyncClient(
        base_url=api, headers={"Authorization": f"Bearer {keys['supervisor']}"}, timeout=30
    )
    async with advocate, staff:
        assert (await advocate.post("/v1/survivors", json={"survivor_id": survivor})).is_success
        granted = await advocate.post(
            f"/v1/survivors/{survivor}/consents",
            json={
                "provisions": [permit(["victim_services"], ["care_coordination"], ["*"])],
                "evidence": {"kind": "form_reference", "reference": "signed form #3"},
            },
        )
        assert granted.status_code == 201
        declared = await staff.post(
            f"/v1/survivors/{survivor}/declarations",
            json={"justification": "Trafficker located the survivor tonight; threat to life."},
        )
        assert declared.status_code == 201
        ordered = await staff.post(
            f"/v1/survivors/{survivor}/court-orders",
            json={
                "reference": "2026-CV-0077",
                "court": "State B District Court",
                "recipient": "rules-police-b",
                "fields": ["survivor_name", "exploitation_type"],
                "expires_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
                "justification": "Order compelling disclosure",
            },
        )
        assert ordered.status_code == 201

        event = cloudevent(
            "harbor-outreach", survivor, SCREENING, type="accord.screening.completed"
        )
        relayed = await publish_and_collect(settings, producer, event, WATCHED)
        assert set(relayed.decisions) == set(WATCHED)
        previews = {}
        for pid in WATCHED:
            answer = await advocate.post(
                f"/v1/survivors/{survivor}/preview",
                json={
                    "partner_id": pid,
                    "event_type": "accord.screening.completed",
                    "fields": sorted(SCREENING),
                    "age": SCREENING["age"],
                },
            )
            assert answer.status_code == 200, pid
            previews[pid] = answer.json()

    for pid in WATCHED:
        decided = relayed.decisions[pid]
        assert {k: previews[pid][k] for k in COMPARED} == {k: decided[k] for k in COMPARED}, pid
    # Not a vacuous comparison: each of the three bases released something.
    assert previews["rules-vs"]["basis"] == ["consent"]
    assert "imminent_danger" in previews["rules-ems"]["basis"]
    assert "court_order" in previews["rules-police-b"]["basis"]
    assert previews["rules-housing"]["released"] == []
