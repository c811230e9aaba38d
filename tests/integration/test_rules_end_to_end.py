"""Each sharing rule through the whole path: agency → Kafka → relay → real OPA → partner.

Every test publishes a real event and reads what the rule-test partners
(``RULE_PARTNERS`` of tests/support/registry.py) received and what the decision records say;
each would fail if its rule were removed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services import policy_data
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import make_engine, make_sessionmaker, transaction
from services.settings import Settings
from tests.support.events import Outcome, cloudevent, publish_and_collect, sealer
from tests.support.registry import RULE_PARTNERS

pytestmark = pytest.mark.integration

WATCHED = [p["id"] for p in RULE_PARTNERS]
SCREENING = {
    "survivor_name": "F. Example",
    "age": 30,
    "gender": "f",
    "exploitation_type": "labor",
    "screening_result": "positive",
    "screening_tool": "STAR",
    "safety_status": "unsafe",
    "reporting_agency": "harbor-outreach",
    "reported_at": "2026-11-24T10:00:00Z",
    "injuries": "bruising",
    "medical_needs": ["dental"],
    "hiv_status": "negative",
    "substance_use_notes": "in recovery",
    "mental_health_notes": "anxiety",
    "pregnancy_status": "not pregnant",
    "service_needs": ["housing", "counselling"],
}
CLASSIFICATION = policy_data.classification(Settings().policies_dir)


def permit(
    types: list[str], purposes: list[str], categories: list[str], **r: Any
) -> dict[str, Any]:
    return {
        "type": "permit",
        "recipients": {"partners": r.get("partners", []), "partner_types": types},
        "purposes": purposes,
        "categories": categories,
        "period": {"start": "2026-01-01T00:00:00Z", "end": None},
    }


def deny(types: list[str], categories: list[str]) -> dict[str, Any]:
    return {**permit(types, ["*"], categories), "type": "deny"}


async def set_consents(
    settings: Settings, producer: AIOKafkaProducer, survivor: str, *provisions: dict[str, Any]
) -> None:
    """Publish the survivor's sharing state as the consent service does."""
    consents = [
        {
            "id": f"c-{survivor}",
            "version": 1,
            "status": "active",
            "recorded_by": {"role": "self", "suspect": False},
            "provisions": list(provisions),
        }
    ]
    record = {"survivor_id": survivor, "seq": 1, "consents": consents if provisions else []}
    value = sealer(settings).snapshot(json.dumps(record).encode(), survivor_id=survivor)
    await producer.send_and_wait(settings.topic_consents, value, key=survivor.encode())


async def run(
    settings: Settings,
    producer: AIOKafkaProducer,
    data: dict[str, Any],
    *,
    survivor: str | None = None,
    agency: str = "harbor-outreach",
    event_type: str = "accord.screening.completed",
) -> Outcome:
    survivor = survivor or f"sv-{uuid.uuid4().hex[:10]}"
    event = cloudevent(agency, survivor, data, type=event_type)
    return await publish_and_collect(settings, producer, event, WATCHED)


def got(outcome: Outcome, partner: str) -> dict[str, Any]:
    deliveries = outcome.deliveries[partner]
    assert len(deliveries) <= 1, partner
    return deliveries[0]["data"] if deliveries else {}


def rules_for(outcome: Outcome, partner: str, field: str) -> list[str]:
    return next(w["rules"] for w in outcome.decisions[partner]["withheld"] if w["field"] == field)


def category_of(event_type: str, field: str) -> str:
    return CLASSIFICATION[event_type][field]


@pytest.fixture(autouse=True)
def _relay_running(relay: None) -> None:
    return None


async def test_R1_R4_adult_without_consent_law_enforcement_and_victim_services_get_nothing(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    out = await run(settings, producer, SCREENING)
    assert sorted(out.decisions) == sorted(WATCHED)
    for partner in WATCHED:
        assert got(out, partner) == {}, partner
        assert out.decisions[partner]["outcome"] == "deny"
    assert "R4" in rules_for(out, "rules-police-a", "survivor_name")
    assert "R2" in rules_for(out, "rules-vs", "survivor_name")


async def test_R2_R10_consent_to_victim_services_that_denies_health_releases_no_health_field(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    await set_consents(
        settings,
        producer,
        survivor,
        permit(["victim_services"], ["care_coordination"], ["*", "health", "mental_health"]),
        deny(["*"], ["health"]),
    )
    out = await run(settings, producer, SCREENING, survivor=survivor)
    shared = got(out, "rules-vs")
    assert {"survivor_name", "service_needs", "exploitation_type"} <= set(shared)
    cats = {category_of("accord.screening.completed", f) for f in shared}
    assert "health" not in cats and not cats & {"hiv_sti", "substance_use", "reproductive_health"}
    assert "R2" in rules_for(out, "rules-vs", "injuries")  # denied by the survivor
    assert "R10" in rules_for(out, "rules-vs", "hiv_status")  # sensitive, not named
    assert got(out, "rules-police-a") == {}  # services never depend on consenting to police (R4)


MANDATED = {
    "survivor_name",
    "age",
    "exploitation_type",
    "safety_status",
    "reporting_agency",
    "reported_at",
}


async def test_R5_R12_minor_in_state_a_child_welfare_gets_the_mandated_set_police_nothing(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    out = await run(settings, producer, {**SCREENING, "age": 15})
    assert set(got(out, "rules-cps-a")) == MANDATED
    assert out.decisions["rules-cps-a"]["basis"] == ["mandated_reporting"]
    assert got(out, "rules-police-a") == {}
    assert got(out, "rules-cps-b") == {}  # not the event's jurisdiction
    assert got(out, "rules-vs") == {}  # every other field still needs consent


async def test_R5_R12_minor_in_state_b_law_enforcement_also_gets_the_mandated_set(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    out = await run(
        settings,
        producer,
        {**SCREENING, "age": 15, "reporting_agency": "valley-school"},
        agency="valley-school",
    )
    assert set(got(out, "rules-cps-b")) == MANDATED
    assert set(got(out, "rules-police-b")) == MANDATED
    assert out.decisions["rules-police-b"]["basis"] == ["mandated_reporting"]
    assert got(out, "rules-cps-a") == {} and got(out, "rules-police-a") == {}


async def test_R4_R12_the_same_survivor_at_18_gets_no_mandated_report(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    out = await run(settings, producer, {**SCREENING, "age": 18})
    assert got(out, "rules-cps-a") == {}


async def test_R4_R5_unknown_age_is_judged_as_an_adult_and_flagged_where_a_report_was_due(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    """Neither age nor date_of_birth: R4 holds (a "*" consent does not reach the police), no
    mandated report goes out (R5 needs a known minor), and only the decision for the partner a
    minor's report would have gone to is flagged age_unknown for review."""
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    await set_consents(settings, producer, survivor, permit(["*"], ["*"], ["*"]))
    no_age = {k: v for k, v in SCREENING.items() if k not in ("age", "date_of_birth")}
    out = await run(settings, producer, no_age, survivor=survivor)
    cps = out.decisions["rules-cps-a"]
    assert "mandated_reporting" not in cps["basis"]
    assert set(cps["field_basis"].values()) <= {"consent"}  # only what the consent gives
    assert got(out, "rules-police-a") == {}
    assert "R4" in rules_for(out, "rules-police-a", "survivor_name")
    flagged = {p for p, d in out.decisions.items() if d["flags"]}
    assert flagged == {"rules-cps-a"}
    assert out.decisions["rules-cps-a"]["flags"] == ["age_unknown"]
    assert out.decisions["rules-cps-a"]["review_required"] is True
    # With the age given the same event is an ordinary minor's case: reported, not flagged.
    minor = await run(settings, producer, {**no_age, "date_of_birth": "2015-01-01"})
    assert set(got(minor, "rules-cps-a")) >= MANDATED - {"age"}
    assert all(d["flags"] == [] for d in minor.decisions.values())


async def test_R7_shelter_location_never_leaves_whatever_the_consent_says(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    everything = [c for c in CLASSIFICATION["accord.safety.concern_raised"].values()]
    await set_consents(
        settings, producer, survivor, permit(["*"], ["*"], sorted({*everything, "*"}))
    )
    data = {
        "survivor_name": "G",
        "shelter_address": "7 Secret Rd",
        "safety_status": "unsafe",
        "concern_type": "stalking",
        "caseworker_notes_internal": "internal",
    }
    out = await run(
        settings, producer, data, survivor=survivor, event_type="accord.safety.concern_raised"
    )
    assert got(out, "rules-vs")  # the consent does share other fields
    for partner in WATCHED:
        assert "shelter_address" not in got(out, partner)
        assert "caseworker_notes_internal" not in got(out, partner)
        assert "R7" in rules_for(out, partner, "shelter_address")


async def test_R11_partner_whose_agreement_lapsed_gets_nothing(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    await set_consents(
        settings,
        producer,
        survivor,
        permit(["legal_aid", "victim_services"], ["care_coordination"], ["*"]),
    )
    out = await run(settings, producer, SCREENING, survivor=survivor)
    assert got(out, "rules-vs")  # the same consent works for a partner in good standing
    assert got(out, "rules-lapsed") == {}
    assert "R11" in rules_for(out, "rules-lapsed", "survivor_name")


async def test_R10_substance_use_arrives_with_a_redisclosure_notice(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    await set_consents(
        settings,
        producer,
        survivor,
        permit(["behavioral_health"], ["care_coordination"], ["*", "substance_use"]),
    )
    out = await run(settings, producer, SCREENING, survivor=survivor)
    delivery = out.deliveries["rules-bh"][0]
    assert delivery["data"]["substance_use_notes"] == "in recovery"
    notices = [o for o in delivery["accordobligations"] if o["kind"] == "redisclosure_notice"]
    assert notices and "substance_use_notes" in notices[0]["fields"]


async def test_R10_criminal_history_never_goes_to_housing_even_with_consent(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    await set_consents(
        settings,
        producer,
        survivor,
        permit(["housing"], ["service_referral"], ["*", "criminal_history"]),
    )
    data = {
        "survivor_name": "H",
        "service_needs": ["housing"],
        "criminal_record": "2019 conviction",
    }
    out = await run(
        settings, producer, data, survivor=survivor, event_type="accord.service_need.recorded"
    )
    assert "criminal_record" not in got(out, "rules-housing")
    assert "R10" in rules_for(out, "rules-housing", "criminal_record")


# --- legal bases through the API (R8, R9) ---------------------------------------------------


@pytest.fixture(scope="module")
def supervisor(database: str) -> str:
    with transaction(make_sessionmaker(make_engine(database))) as session:
        return issue_credential(
            session=session, role=Role.SUPERVISOR, subject="sup-harbor", agency_id="harbor-outreach"
        )


@pytest.fixture
def staff_api(api: str, supervisor: str) -> Iterator[httpx.AsyncClient]:
    client = httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {supervisor}"})
    yield client


CONCERN = {
    "survivor_name": "I",
    "current_location": "bus station",
    "safety_status": "unsafe",
    "concern_type": "trafficker seen",
    "concern_description": "detail",
}


async def test_R8_imminent_danger_releases_the_emergency_set_until_it_ends(
    settings: Settings, producer: AIOKafkaProducer, staff_api: httpx.AsyncClient
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    declared = await staff_api.post(
        f"/v1/survivors/{survivor}/declarations",
        json={"justification": "Trafficker located the survivor tonight; credible threat to life."},
    )
    assert declared.status_code == 201
    during = await run(
        settings, producer, CONCERN, survivor=survivor, event_type="accord.safety.concern_raised"
    )
    assert set(got(during, "rules-ems")) == {"survivor_name", "current_location", "safety_status"}
    assert during.decisions["rules-ems"]["basis"] == ["imminent_danger"]
    assert during.decisions["rules-ems"]["review_required"] is True
    assert got(during, "rules-vs") == {}  # only the declared recipients
    ended = await staff_api.post(
        f"/v1/survivors/{survivor}/declarations/{declared.json()['id']}/end"
    )
    assert ended.status_code == 200
    after = await run(
        settings, producer, CONCERN, survivor=survivor, event_type="accord.safety.concern_raised"
    )
    assert got(after, "rules-ems") == {} and got(after, "rules-police-a") == {}


async def test_R8_R12_a_declaration_reaches_the_partners_of_the_events_jurisdiction_only(
    settings: Settings, producer: AIOKafkaProducer, staff_api: httpx.AsyncClient
) -> None:
    """A state-a agency declares imminent danger: state-a law enforcement and emergency
    services get the emergency set, state-b law enforcement gets nothing (no neighbouring
    jurisdiction is configured)."""
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    declared = await staff_api.post(
        f"/v1/survivors/{survivor}/declarations",
        json={"justification": "Trafficker located the survivor tonight; credible threat to life."},
    )
    assert declared.status_code == 201
    out = await run(
        settings, producer, CONCERN, survivor=survivor, event_type="accord.safety.concern_raised"
    )
    emergency = {"survivor_name", "current_location", "safety_status"}
    assert set(got(out, "rules-police-a")) == emergency
    assert set(got(out, "rules-ems")) == emergency
    assert got(out, "rules-police-b") == {}
    refused = out.decisions["rules-police-b"]
    assert refused["outcome"] == "deny" and "imminent_danger" not in refused["basis"]
    assert "R8" not in refused["reasons"]  # no rule allowed anything to it


async def test_R9_court_order_releases_exactly_the_named_fields_to_the_named_partner(
    settings: Settings, producer: AIOKafkaProducer, staff_api: httpx.AsyncClient
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    order = {
        "reference": "2026-CV-0042",
        "court": "State A Family Court",
        "recipient": "rules-police-a",
        "fields": ["survivor_name", "exploitation_type"],
        "expires_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
        "justification": "Order compelling disclosure",
    }
    recorded = await staff_api.post(f"/v1/survivors/{survivor}/court-orders", json=order)
    assert recorded.status_code == 201
    out = await run(settings, producer, SCREENING, survivor=survivor)
    assert set(got(out, "rules-police-a")) == {"survivor_name", "exploitation_type"}
    assert out.decisions["rules-police-a"]["basis"] == ["court_order"]
    assert out.decisions["rules-police-a"]["review_required"] is True
    assert got(out, "rules-police-b") == {}


async def test_R8_R9_only_authorised_staff_can_record_legal_bases(api: str, database: str) -> None:
    with transaction(make_sessionmaker(make_engine(database))) as session:
        agency_key = issue_credential(session=session, role=Role.AGENCY, subject="harbor-outreach")
    async with httpx.AsyncClient(
        base_url=api, headers={"Authorization": f"Bearer {agency_key}"}
    ) as c:
        r = await c.post("/v1/survivors/sv-x/declarations", json={"justification": "x" * 30})
    assert r.status_code == 403


async def test_R13_every_decision_names_rules_consents_and_revision_and_repeats(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    await set_consents(
        settings, producer, survivor, permit(["victim_services"], ["care_coordination"], ["*"])
    )
    first = await run(settings, producer, SCREENING, survivor=survivor)
    second = await run(settings, producer, SCREENING, survivor=survivor)
    for out in (first, second):
        record = out.decisions["rules-vs"]
        assert record["consents"] == [{"id": f"c-{survivor}", "version": 1}]
        assert record["policy_revision"].startswith("sha256:")
        assert all(w["rules"] for w in record["withheld"])
    keep = ("released", "withheld", "basis", "reasons", "consents", "policy_revision")
    assert [{k: first.decisions[p][k] for k in keep} for p in WATCHED] == [
        {k: second.decisions[p][k] for k in keep} for p in WATCHED
    ]


async def _enroll(api: str, advocate: str, survivor: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {advocate}"}
    async with httpx.AsyncClient(base_url=api, headers=headers) as adv:
        assert (await adv.post("/v1/survivors", json={"survivor_id": survivor})).status_code == 201
        code = (await adv.post(f"/v1/survivors/{survivor}/enrollment-codes", json={})).json()[
            "code"
        ]
    async with httpx.AsyncClient(base_url=api) as anon:
        key = (await anon.post("/v1/enroll", json={"code": code})).json()["api_key"]
    return httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def advocate(database: str) -> str:
    with transaction(make_sessionmaker(make_engine(database))) as session:
        return issue_credential(
            session=session, role=Role.ADVOCATE, subject="adv-rules", agency_id="harbor-outreach"
        )


async def test_R5_consent_recorded_by_a_guardian_later_flagged_as_suspect_shares_nothing(
    settings: Settings, producer: AIOKafkaProducer, api: str, advocate: str
) -> None:
    survivor, guardian = f"sv-{uuid.uuid4().hex[:10]}", f"g-{uuid.uuid4().hex[:8]}"
    adv = httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {advocate}"})
    await adv.post("/v1/survivors", json={"survivor_id": survivor})
    link = {"guardian_id": guardian, "relation": "stepfather"}
    assert (await adv.put(f"/v1/survivors/{survivor}/guardians", json=link)).status_code == 204
    code = (
        await adv.post(
            f"/v1/survivors/{survivor}/enrollment-codes",
            json={"role": "guardian", "guardian_id": guardian},
        )
    ).json()["code"]
    key = (await httpx.AsyncClient(base_url=api).post("/v1/enroll", json={"code": code})).json()
    g = httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {key['api_key']}"})
    body = {
        "provisions": [permit(["victim_services"], ["care_coordination"], ["*"])],
        "evidence": {"kind": "signed_statement", "reference": "guardian form"},
    }
    assert (await g.post(f"/v1/survivors/{survivor}/consents", json=body)).status_code == 201
    minor = {**SCREENING, "age": 15}
    before = await run(settings, producer, minor, survivor=survivor)
    assert got(before, "rules-vs")  # the guardian's consent counts while they are not a suspect
    flagged = {**link, "suspect": True}
    assert (await adv.put(f"/v1/survivors/{survivor}/guardians", json=flagged)).status_code == 204
    after = await run(settings, producer, minor, survivor=survivor)
    assert got(after, "rules-vs") == {}
    assert "R5" in rules_for(after, "rules-vs", "survivor_name")
    assert set(got(after, "rules-cps-a")) == MANDATED  # the mandated report is unaffected


@pytest.mark.parametrize("tell", [True, False])
async def test_R8_survivor_is_told_of_a_declaration_unless_that_would_endanger_them(
    api: str, advocate: str, staff_api: httpx.AsyncClient, tell: bool
) -> None:
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    me = await _enroll(api, advocate, survivor)
    body = {
        "justification": "Credible threat reported by the shelter tonight.",
        "tell_survivor": tell,
    }
    assert (
        await staff_api.post(f"/v1/survivors/{survivor}/declarations", json=body)
    ).status_code == 201
    history = (await me.get(f"/v1/survivors/{survivor}/disclosures")).json()
    kinds = [h["kind"] for h in history]
    assert kinds == (["imminent_danger_declared"] if tell else [])
    assert "Credible threat" not in json.dumps(history)  # the justification stays internal
