"""Stages 3-6 as pure functions: the policy input, parsing OPA's answer, projection, sealing,
records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from nacl.public import PrivateKey

from services.broker.pipeline import deliver
from services.broker.pipeline.decide import build_input, parse_decision
from services.broker.pipeline.model import Judged, SurvivorFacts
from services.broker.pipeline.project import project, projected
from services.broker.pipeline.seal import Sealer, sealed_pair
from services.decision_records import split_decisions
from tests.support.pipeline import NOW, make_event, make_recipient

FIELDS = ["age", "hiv_status", "survivor_name"]


def allow(fields: list[str], **extra: Any) -> dict[str, Any]:
    withheld = [{"field": f, "rules": ["R6"]} for f in FIELDS if f not in fields]
    return {
        "allow": True,
        "fields": fields,
        "withheld": withheld,
        "basis": ["consent"],
        "reasons": ["R2", "R6"],
        "consents": [{"id": "c-1", "version": 2}],
        "obligations": [],
        "review_required": False,
        "policy_revision": "rev-1",
        **extra,
    }


def test_policy_input_carries_field_names_never_values() -> None:
    event = make_event(survivor_name="Secret Name", age=30, hiv_status="positive")
    doc = build_input(
        event, make_recipient(), jurisdiction="state-a", facts=SurvivorFacts(), now=NOW
    )
    text = json.dumps(doc)
    assert doc["event"]["fields"] == FIELDS
    assert "Secret Name" not in text and "positive" not in text
    assert doc["event"]["agency"] == {"id": "harbor-outreach", "jurisdiction": "state-a"}
    assert doc["now"] == "2026-11-24T12:00:00Z"


def test_valid_decision_is_parsed() -> None:
    d = parse_decision(allow(["survivor_name"]), event_fields=FIELDS)
    assert d.allow and d.fields == ("survivor_name",)
    assert d.consents == (("c-1", 2),)
    assert {w.field for w in d.withheld} == {"age", "hiv_status"}


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {"fields": ["age"]},  # no allow
        {"allow": "yes", "fields": ["age"]},
        {"allow": False, "fields": ["age"]},  # released without allow
        {"allow": True, "fields": ["password"]},  # a field the event does not have
        {"allow": True, "fields": "age"},
        {"allow": True, "fields": ["age"], "consents": [{"id": "c"}]},  # malformed consent
        {"allow": True, "fields": ["age"], "flags": "age_unknown"},  # flags not a list
    ],
)
def test_malformed_decision_denies_every_field_R1(raw: Any) -> None:
    d = parse_decision(raw, event_fields=FIELDS)
    assert not d.allow and d.fields == ()
    assert sorted(w.field for w in d.withheld) == FIELDS
    assert d.reasons == ("R1",)


def test_projection_keeps_exactly_the_released_fields() -> None:
    event = make_event(survivor_name="X", age=30, hiv_status="positive")
    d = parse_decision(allow(["age", "survivor_name"]), event_fields=list(event.data))
    assert project(event, d) == {"survivor_name": "X", "age": 30}


def test_projection_of_a_deny_is_empty() -> None:
    event = make_event(survivor_name="X", age=30)
    d = parse_decision({"allow": False}, event_fields=list(event.data))
    assert project(event, d) == {}


def _records(decision: dict[str, Any]) -> list[Any]:
    event = make_event(survivor_name="Secret Name", age=30, hiv_status="positive")
    judged = Judged(event, make_recipient(), parse_decision(decision, event_fields=FIELDS))
    sealed = sealed_pair(projected(judged), Sealer(PrivateKey.generate()))  # stages 4 and 5
    return deliver.records(
        [sealed], decided_at=NOW, decisions_topic="decisions", partner_topic_prefix="p."
    )


def test_allowed_pair_gives_one_delivery_and_one_decision_record() -> None:
    out = _records(allow(["age"]))
    assert [r.topic for r in out] == ["p.shelter-1", "decisions"]
    assert json.loads(out[0].value)["delivery_id"] == "evt-1/shelter-1"
    assert b"Secret Name" not in out[0].value  # sealed
    assert out[0].key == b"sv-1"
    (record,) = split_decisions(json.loads(out[1].value))
    assert record["outcome"] == "partial"
    assert record["released"] == ["age"]
    assert {w["field"] for w in record["withheld"]} == {"hiv_status", "survivor_name"}


def test_denied_pair_gives_only_a_decision_record() -> None:
    out = _records({"allow": False, "fields": [], "withheld": [], "reasons": ["R4"]})
    assert [r.topic for r in out] == ["decisions"]
    (record,) = split_decisions(json.loads(out[0].value))
    assert record["outcome"] == "deny"
    assert record["flags"] == []


def test_an_age_unknown_flag_reaches_the_decision_record() -> None:
    flagged = {"allow": False, "fields": [], "withheld": [], "reasons": ["R2"]}
    out = _records({**flagged, "review_required": True, "flags": ["age_unknown"]})
    (record,) = split_decisions(json.loads(out[0].value))
    assert (record["flags"], record["review_required"]) == (["age_unknown"], True)


def test_decision_records_never_contain_field_values() -> None:
    for record in _records(allow(["age", "hiv_status", "survivor_name"])):
        if record.topic == "decisions":
            assert b"Secret Name" not in record.value and b"positive" not in record.value


def test_one_folded_decision_record_per_event_names_every_partner() -> None:
    """An event to three partners: the deliveries, then one record holding the three
    decisions, each as it would stand alone (the audit sink splits it)."""
    event = make_event(age=24)
    sealer = Sealer(PrivateKey.generate())
    judged = [
        sealed_pair(
            projected(
                Judged(
                    event, make_recipient(p), parse_decision(allow(["age"]), event_fields=["age"])
                )
            ),
            sealer,
        )
        for p in ("a", "b", "c")
    ]
    out = deliver.records(
        judged, decided_at=NOW, decisions_topic="decisions", partner_topic_prefix="p."
    )
    assert [r.topic for r in out] == ["p.a", "p.b", "p.c", "decisions"]
    docs = split_decisions(json.loads(out[-1].value))
    assert [d["partner_id"] for d in docs] == ["a", "b", "c"]
    assert docs[0] == deliver.decision_record(judged[0], decided_at=NOW)
    assert split_decisions(docs[0]) == [docs[0]]  # a record written before folding
    assert split_decisions({"unrelated": 1}) == []


def test_the_consent_preview_asks_with_the_relays_own_policy_input() -> None:
    # One function builds the policy input (issue 13): the preview answers what the relay
    # decides only if it asks with exactly it (tests/integration/test_preview_matches_relay.py).
    from services.consent import views

    assert vars(views)["build_input"] is build_input
