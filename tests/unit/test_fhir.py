"""FHIR R4 Consent import and export (services/consent/fhir.py): example resources round trip,
a property over random consents, every refused construct named by its path, and the survivor
appearing only as a pseudonym."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.consent.fhir import (
    CATEGORY_SYSTEM,
    PARTNER_TYPE_SYSTEM,
    PURPOSE_SYSTEM,
    FhirRefused,
    from_fhir,
    recorded_by_from_fhir,
    to_fhir,
)
from services.consent.schemas import Consent, Evidence, Period, Provision, Recipients, RecordedBy
from services.vocabulary import ANY, Category, PartnerType, Purpose

EXAMPLES = Path(__file__).parent / "fhir_examples"
EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.json"))


def example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return doc


def stored(resource: dict[str, Any]) -> Consent:
    """The consent Accord would hold after importing ``resource`` with the server's ids kept."""
    data = from_fhir(resource)
    by = recorded_by_from_fhir(resource)
    assert by is not None
    return Consent(
        id=resource["id"],
        survivor_id=resource["patient"]["reference"].removeprefix("Patient/"),
        version=int(resource["meta"]["versionId"]),
        status="active",
        provisions=data.provisions,
        recorded_by=by,
        evidence=data.evidence,
        recorded_at=datetime.fromisoformat(resource["dateTime"]),
    )


def refusal(resource: dict[str, Any]) -> list[str]:
    with pytest.raises(FhirRefused) as info:
        from_fhir(resource)
    return info.value.problems


def paths(problems: list[str]) -> list[str]:
    return [p.split(": ", 1)[0] for p in problems]


# --- examples ---------------------------------------------------------------------------------


def test_there_are_examples_for_permit_nested_deny_and_period() -> None:
    assert {"permit", "deny-nested-in-permit", "period-guardian"} <= set(EXAMPLE_NAMES)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_imports_and_exports_to_the_same_resource(name: str) -> None:
    resource = example(name)
    consent = stored(resource)
    assert to_fhir(consent, consent.survivor_id) == resource
    again = from_fhir(to_fhir(consent, consent.survivor_id))
    assert list(again.provisions) == list(consent.provisions)
    assert again.evidence == consent.evidence


def test_deny_nested_in_permit_flattens_to_a_permit_and_denies_that_inherit() -> None:
    data = from_fhir(example("deny-nested-in-permit"))
    permit, deny_mh, deny_window = data.provisions
    assert (permit.type, deny_mh.type, deny_window.type) == ("permit", "deny", "deny")
    # The first deny states recipients and categories; purposes and period are the permit's.
    assert deny_mh.recipients == Recipients(partner_types=[PartnerType.HEALTH])
    assert deny_mh.categories == [Category.MENTAL_HEALTH]
    assert deny_mh.purposes == permit.purposes and deny_mh.period == permit.period
    # The second states a period and a purpose; recipients and categories are the permit's.
    assert deny_window.recipients == permit.recipients
    assert deny_window.categories == permit.categories
    assert deny_window.purposes == [Purpose.SAFETY_PLANNING]
    assert deny_window.period.end == datetime(2026, 9, 1, tzinfo=UTC)


def test_period_example_keeps_start_and_end_and_the_guardian() -> None:
    resource = example("period-guardian")
    data = from_fhir(resource)
    assert [p.type for p in data.provisions] == ["permit", "deny", "permit", "deny"]
    assert data.provisions[0].period == Period(
        start=datetime(2026, 1, 15, tzinfo=UTC), end=datetime(2026, 7, 1, tzinfo=UTC)
    )
    assert data.provisions[1].period.start == datetime(2026, 3, 1, tzinfo=UTC)
    assert data.provisions[3].period.end is None
    assert recorded_by_from_fhir(resource) == RecordedBy(
        role="guardian", actor="g-aunt-2291", relation="aunt"
    )


def test_a_typeless_root_may_carry_elements_its_rules_inherit() -> None:
    resource = example("permit")
    rule = resource["provision"]
    period = rule.pop("period")
    resource["provision"] = {"period": period, "provision": [rule]}
    assert from_fhir(resource) == from_fhir(example("permit"))


def test_absent_purpose_means_any_purpose() -> None:
    resource = example("permit")
    del resource["provision"]["purpose"]
    assert list(from_fhir(resource).provisions[0].purposes) == [ANY]


def test_export_maps_revoked_and_expired_to_inactive() -> None:
    consent = stored(example("permit"))
    assert to_fhir(consent, consent.survivor_id)["status"] == "active"
    for status in ("revoked", "expired"):
        changed = consent.model_copy(update={"status": status})
        assert to_fhir(changed, consent.survivor_id)["status"] == "inactive"


# --- only the pseudonym ------------------------------------------------------------------------


def strings(doc: Any) -> list[tuple[str, str]]:
    """(key, string) for every string in a JSON document."""
    out: list[tuple[str, str]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += [(key, value)] if isinstance(value, str) else strings(value)
    elif isinstance(doc, list):
        for value in doc:
            out += strings(value)
    return out


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_the_export_identifies_the_survivor_by_pseudonym_only(name: str) -> None:
    consent = stored(example(name)).model_copy(update={"survivor_id": "sv-secret-42"})
    if consent.recorded_by.role == "self":
        consent = consent.model_copy(
            update={"recorded_by": RecordedBy(role="self", actor="sv-secret-42")}
        )
    resource = to_fhir(consent, "sv-secret-42")
    mentions = [(k, v) for k, v in strings(resource) if "sv-secret-42" in v]
    assert mentions and all(
        mentions_ok == ("reference", "Patient/sv-secret-42") for mentions_ok in mentions
    )
    assert resource["patient"] == {"reference": "Patient/sv-secret-42"}
    for key in ("identifier", "display", "name", "birthDate", "telecom", "address"):
        assert key not in resource["patient"]


# --- a property over random consents ------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)


@st.composite
def periods(draw: st.DrawFn) -> Period:
    start = draw(moments)
    if draw(st.booleans()):
        return Period(start=start)
    return Period(
        start=start, end=start + draw(st.timedeltas(timedelta(seconds=1), timedelta(days=900)))
    )


partner_ids = st.sampled_from(["lighthouse-shelter", "northside-clinic", "metro-police", "p-7"])


@st.composite
def provisions(draw: st.DrawFn, parent: Provision | None = None) -> Provision:
    """Any provision; with ``parent``, often one lying within it (so export nests it)."""
    if parent is not None and draw(st.booleans()):
        cats = [c for c in parent.categories if c != ANY] or [Category.IDENTITY]
        return Provision(
            type="deny",
            recipients=parent.recipients,
            purposes=parent.purposes if draw(st.booleans()) else list(parent.purposes)[:1],
            categories=parent.categories if draw(st.booleans()) else cats[:1],
            period=parent.period,
        )
    partners = draw(st.lists(partner_ids, max_size=2))
    types = draw(
        st.lists(st.sampled_from([*PartnerType, ANY]), min_size=0 if partners else 1, max_size=3)
    )
    return Provision(
        type=draw(st.sampled_from(["permit", "deny"])),
        recipients=Recipients(partners=partners, partner_types=types),
        purposes=draw(st.lists(st.sampled_from([*Purpose, ANY]), min_size=1, max_size=3)),
        categories=draw(st.lists(st.sampled_from([*Category, ANY]), min_size=1, max_size=4)),
        period=draw(periods()),
    )


@st.composite
def consents(draw: st.DrawFn) -> Consent:
    items: list[Provision] = []
    for _ in range(draw(st.integers(1, 6))):
        previous = items[-1] if items and items[-1].type == "permit" else None
        items.append(draw(provisions(previous)))
    role = draw(st.sampled_from(["self", "advocate", "guardian"]))
    actor = {"self": "sv-prop-1", "advocate": "adv-1", "guardian": "g-1"}[role]
    relation = (
        draw(st.sampled_from([None, "aunt", "foster parent"])) if role == "guardian" else None
    )
    return Consent(
        id="consent-prop",
        survivor_id="sv-prop-1",
        version=draw(st.integers(1, 9)),
        status=draw(st.sampled_from(["active", "revoked", "expired"])),
        provisions=items,
        recorded_by=RecordedBy(role=role, actor=actor, relation=relation),
        evidence=Evidence(
            kind=draw(st.sampled_from(["signed_statement", "form_reference"])),
            reference=draw(st.text(min_size=1, max_size=40).filter(str.strip)),
        ),
        recorded_at=draw(moments),
    )


@settings(max_examples=300, deadline=None)
@given(consents())
def test_export_then_import_gives_the_same_consent(consent: Consent) -> None:
    resource = to_fhir(consent, consent.survivor_id)
    json.loads(json.dumps(resource))  # plain JSON
    active = copy.deepcopy(resource)
    active["status"] = "active"  # an inactive consent is exported but not imported
    back = from_fhir(active, survivor_id=consent.survivor_id)
    assert list(back.provisions) == list(consent.provisions)
    assert back.evidence == consent.evidence
    assert recorded_by_from_fhir(resource) == consent.recorded_by


# --- refusals ---------------------------------------------------------------------------------


def nested_deny() -> dict[str, Any]:
    return example("deny-nested-in-permit")


def test_every_unsupported_construct_is_listed_with_its_path() -> None:
    resource = nested_deny()
    resource["provision"]["provision"][1]["data"] = [
        {"meaning": "instance", "reference": {"reference": "Observation/1"}}
    ]
    resource["provision"]["securityLabel"] = [{"system": "x", "code": "R"}]
    resource["provision"]["provision"][0]["dataPeriod"] = {"start": "2026-01-01T00:00:00Z"}
    resource["identifier"] = [{"value": "abc"}]
    problems = refusal(resource)
    assert "provision.provision[1].data: data references are not supported" in problems
    assert set(paths(problems)) == {
        "provision.provision[1].data",
        "provision.securityLabel",
        "provision.provision[0].dataPeriod",
        "identifier",
    }


REFUSALS: list[tuple[str, Any, str]] = [
    # (what to change, how, the path that must be named)
    ("status", "draft", "status"),
    ("status", "inactive", "status"),
    (
        "scope",
        {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}
            ]
        },
        "scope",
    ),
    (
        "category",
        [{"coding": [{"system": "http://loinc.org", "code": "64292-6"}]}],
        "category[0].coding[0]",
    ),
    (
        "policyRule",
        {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}
            ]
        },
        "policyRule.coding[0]",
    ),
    ("patient", {"reference": "Patient/sv-river-17", "display": "Jane Doe"}, "patient.display"),
    ("patient", {"identifier": {"system": "urn:ssn", "value": "1"}}, "patient.identifier"),
    ("extension", [{"url": "x", "valueString": "y"}], "extension"),
    ("modifierExtension", [{"url": "x", "valueString": "y"}], "modifierExtension"),
    ("policy", [{"uri": "https://example.org/policy"}], "policy"),
    ("verification", [{"verified": True}], "verification"),
    ("grantee", [{"reference": "Organization/x"}], "grantee"),
    ("decision", "permit", "decision"),
    ("sourceAttachment", {"title": "scan", "data": "aGVsbG8="}, "sourceAttachment.data"),
    ("nonsense", 1, "(resource)"),  # an unknown element: where, not its name (see below)
]


@pytest.mark.parametrize(("key", "value", "path"), REFUSALS)
def test_a_consent_level_construct_is_refused(key: str, value: Any, path: str) -> None:
    resource = nested_deny()
    resource[key] = value
    if key == "sourceAttachment":
        del resource["sourceReference"]
    assert path in paths(refusal(resource))


def test_an_unknown_element_is_refused_without_repeating_its_name() -> None:
    resource = nested_deny()
    resource["Jane Doe 555-0100"] = 1
    resource["provision"]["Hidden Lane 12"] = "x"
    problems = refusal(resource)
    assert "(resource): has an element that is not part of an R4 Consent" in problems
    assert any(p.startswith("provision: has an element") for p in problems)
    assert "Jane" not in str(problems) and "Hidden" not in str(problems)


def rule_with(**change: Any) -> dict[str, Any]:
    resource = nested_deny()
    resource["provision"]["provision"][0].update(change)
    return resource


PROVISION_REFUSALS: list[tuple[dict[str, Any], str]] = [
    (
        {
            "action": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                            "code": "correct",
                        }
                    ]
                }
            ]
        },
        "provision.provision[0].action[0].coding[0]",
    ),
    (
        {"action": [{"coding": [{"system": "urn:x", "code": "disclose"}]}]},
        "provision.provision[0].action[0].coding[0].system",
    ),
    (
        {
            "purpose": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
            ]
        },
        "provision.provision[0].purpose[0]",
    ),
    (
        {
            "purpose": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HPAYMT"}
            ]
        },
        "provision.provision[0].purpose[0]",
    ),
    (
        {"purpose": [{"system": PURPOSE_SYSTEM, "code": "marketing"}]},
        "provision.provision[0].purpose[0].code",
    ),
    (
        {"purpose": [{"system": "urn:other", "code": "care_coordination"}]},
        "provision.provision[0].purpose[0].system",
    ),
    (
        {"class": [{"system": CATEGORY_SYSTEM, "code": "genome"}]},
        "provision.provision[0].class[0].code",
    ),
    (
        {"class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]},
        "provision.provision[0].class[0].system",
    ),
    (
        {"code": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "health"}]}]},
        "provision.provision[0].code",
    ),
    (
        {
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "PRCP",
                            }
                        ]
                    },
                    "reference": {"reference": "Organization/northside-clinic"},
                }
            ]
        },
        "provision.provision[0].actor[0].role",
    ),
    (
        {
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {"reference": "Practitioner/dr-who"},
                }
            ]
        },
        "provision.provision[0].actor[0].reference.reference",
    ),
    (
        {
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {
                        "type": "Organization",
                        "identifier": {"system": PARTNER_TYPE_SYSTEM, "value": "spy_agency"},
                    },
                }
            ]
        },
        "provision.provision[0].actor[0].reference.identifier.value",
    ),
    (
        {
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {
                        "type": "Organization",
                        "identifier": {"system": PARTNER_TYPE_SYSTEM, "value": "law_enforcement"},
                    },
                }
            ]
        },
        "provision.provision[0].actor",
    ),
    (
        {"period": {"start": "2026-09-01T00:00:00Z", "end": "2026-08-01T00:00:00Z"}},
        "provision.provision[0].period.end",
    ),
    ({"period": {"start": "2025-01-01T00:00:00Z"}}, "provision.provision[0].period"),
    ({"period": {"start": "2026-09-01"}}, "provision.provision[0].period.start"),
    (
        {"purpose": [{"system": PURPOSE_SYSTEM, "code": "investigation"}]},
        "provision.provision[0].purpose",
    ),
    (
        {"class": [{"system": CATEGORY_SYSTEM, "code": "immigration"}]},
        "provision.provision[0].class",
    ),
    ({"type": "maybe"}, "provision.provision[0].type"),
    ({"documentType": [{"system": "x", "code": "y"}]}, "provision.provision[0].documentType"),
]


@pytest.mark.parametrize(("change", "path"), PROVISION_REFUSALS)
def test_a_provision_construct_is_refused(change: dict[str, Any], path: str) -> None:
    assert path in paths(refusal(rule_with(**change)))


def test_a_permit_nested_in_a_deny_is_refused() -> None:
    resource = nested_deny()
    resource["provision"]["type"] = "deny"
    resource["provision"]["provision"][0]["type"] = "permit"
    problems = refusal(resource)
    assert "provision.provision[0].type" in paths(problems)
    assert any("R2" in p for p in problems)


def test_nesting_deeper_than_three_levels_is_refused() -> None:
    resource = example("period-guardian")
    deny = resource["provision"]["provision"][0]["provision"][0]
    deny["provision"] = [{"type": "deny"}]
    assert "provision.provision[0].provision[0].provision" in paths(refusal(resource))


def test_missing_parts_are_named() -> None:
    resource = example("permit")
    for key in ("patient", "provision", "sourceAttachment", "scope", "category"):
        del resource[key]
    assert set(paths(refusal(resource))) == {
        "patient",
        "provision",
        "sourceAttachment",
        "scope",
        "category",
    }
    rule = example("permit")
    for key in ("period", "actor", "class"):
        del rule["provision"][key]
    assert set(paths(refusal(rule))) == {
        "provision.period",
        "provision.actor",
        "provision.class",
    }


def test_wrong_resource_type_and_r5_shapes_are_refused() -> None:
    assert refusal({"resourceType": "Patient"}) == ["resourceType: must be Consent"]
    r5 = example("permit")
    r5["provision"] = [r5["provision"]]
    r5["subject"] = r5.pop("patient")
    assert set(paths(refusal(r5))) >= {"provision", "subject", "patient"}


def test_the_patient_must_be_the_survivor_of_the_request() -> None:
    with pytest.raises(FhirRefused) as info:
        from_fhir(example("permit"), survivor_id="sv-someone-else")
    assert paths(info.value.problems) == ["patient.reference"]


def test_problems_never_repeat_values_from_the_resource() -> None:
    resource = nested_deny()
    secret = "Jane-Q-Survivor-1985"
    resource["patient"]["display"] = secret
    resource["provision"]["purpose"] = [{"system": PURPOSE_SYSTEM, "code": secret}]
    resource["provision"]["class"] = [{"system": secret, "code": "identity"}]
    resource["sourceReference"] = {"display": "x" * 501}
    resource["status"] = secret
    problems = refusal(resource)
    assert len(problems) >= 5
    assert not any(secret in p or "xxxx" in p for p in problems)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def locations(doc: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += locations(value, (*here, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += locations(value, (*here, i))
    return out


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(EXAMPLE_NAMES), st.data(), json_values)
def test_any_damaged_resource_is_imported_or_refused_never_crashes(
    name: str, data: st.DataObject, value: Any
) -> None:
    resource = example(name)
    where = data.draw(st.sampled_from(locations(resource)[1:]))
    target: Any = resource
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    try:
        from_fhir(resource)
    except FhirRefused as exc:
        assert exc.problems and all(": " in p for p in exc.problems)
