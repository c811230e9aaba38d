package accord.decision_test

import data.accord.decision
import data.accord.testing

shelter_decision := decision.decide(testing.base)

test_R2_shelter_receives_ordinary_fields_it_needs_by_consent if {
	d := shelter_decision
	d.allow == true
	testing.subset(
		{"survivor_name", "date_of_birth", "age", "phone", "service_needs", "referral_reason", "safety_status"},
		testing.released(d),
	)
	d.field_basis.survivor_name == "consent"
	d.basis == ["consent"]
	d.consents == [{"id": "c-1", "version": 3}]
	"R2" in d.reasons
	testing.accounts_for_every_field(testing.base, d)
}

test_R1_unclassified_field_is_withheld_by_R1 if {
	testing.rules_of(shelter_decision, "nickname") == {"R1"}
	not "nickname" in testing.released(shelter_decision)
}

test_R1_no_consent_releases_nothing if {
	d := decision.decide(testing.item(testing.shelter, "service_referral", []))
	testing.nothing_released(d)
	testing.rules_of(d, "survivor_name") == {"R2"}
	testing.accounts_for_every_field(testing.base, d)
}

test_R1_unknown_event_type_denies_everything if {
	d := decision.decide(testing.patched(testing.base, "/event/type", "accord.unheard.of"))
	testing.nothing_released(d)
	d.reasons == ["R1"]
	testing.rules_of(d, "survivor_name") == {"R1"}
	testing.accounts_for_every_field(testing.base, d)
}

test_R1_unknown_partner_type_denies_everything if {
	d := decision.decide(testing.patched(testing.base, "/partner/type", "florist"))
	testing.nothing_released(d)
	d.reasons == ["R1"]
}

test_R1_unknown_purpose_denies_everything if {
	testing.nothing_released(decision.decide(testing.patched(testing.base, "/purpose", "marketing")))
}

test_R1_unknown_jurisdiction_denies_everything if {
	d := decision.decide(testing.patched(testing.base, "/event/agency/jurisdiction", "atlantis"))
	testing.nothing_released(d)
	d.reasons == ["R1"]
}

test_R1_malformed_inputs_deny_everything if {
	every bad in [
		testing.patched(testing.base, "/now", "yesterday"),
		testing.patched(testing.base, "/event/fields", "survivor_name"),
		testing.patched(testing.base, "/event/fields", ["survivor_name", 7]),
		testing.patched(testing.base, "/event/survivor/age", "24"),
		testing.patched(testing.base, "/event/survivor/age", -1),
		testing.patched(testing.base, "/consents", {"id": "c-1"}),
		testing.patched(testing.base, "/partner", "shelter-1"),
		json.remove(testing.base, ["/partner"]),
		json.remove(testing.base, ["/purpose"]),
		json.remove(testing.base, ["/now"]),
	] {
		testing.nothing_released(decision.decide(bad))
	}
}

test_R1_missing_or_non_object_input_denies if {
	every bad in [{}, null, "x", [], 3] {
		d := decision.decide(bad)
		testing.nothing_released(d)
		d.withheld == []
		d.reasons == ["R1"]
		d.flags == []
	}
}

test_R1_missing_optional_lists_are_empty_not_malformed if {
	d := decision.decide(json.remove(testing.base, ["/declarations", "/court_orders"]))
	d.allow == true
}

test_R1_null_age_is_well_formed if {
	d := decision.decide(testing.patched(testing.base, "/event/survivor/age", null))
	d.allow == true
}

test_R13_decision_rule_decides_input if {
	d := decision.decision with input as testing.base
	d == shelter_decision
}

test_R13_batch_decides_items_in_order if {
	police_item := testing.item(testing.police, "investigation", [testing.ordinary_consent])
	results := decision.batch with input as {"items": [testing.base, {}, police_item, testing.base]}
	count(results) == 4
	results[0] == shelter_decision
	testing.nothing_released(results[1])
	results[1].reasons == ["R1"]
	results[2] == decision.decide(police_item)
	testing.nothing_released(results[2])
	results[3] == results[0]
}

test_R13_batch_of_nothing_is_empty if {
	results := decision.batch with input as {"items": []}
	results == []
}

test_R13_same_input_same_decision if {
	decision.decide(testing.base) == decision.decide(json.unmarshal(json.marshal(testing.base)))
}

test_R13_policy_revision_unpinned_without_meta if {
	shelter_decision.policy_revision == "unpinned"
	decision.decide({}).policy_revision == "unpinned"
}

test_R13_policy_revision_from_meta if {
	d := decision.decide(testing.base) with data.accord.meta as {"revision": "sha256:0123abcd"}
	d.policy_revision == "sha256:0123abcd"
}

test_R13_every_list_is_sorted if {
	d := shelter_decision
	d.fields == sort(d.fields)
	d.reasons == sort(d.reasons)
	d.basis == sort(d.basis)
	[entry.field | some entry in d.withheld] == sort(withheld_names(d))
	every entry in d.withheld {
		entry.rules == sort(entry.rules)
		count(entry.rules) > 0
	}
}

withheld_names(d) := [entry.field | some entry in d.withheld]

test_R13_reasons_name_rules_that_allowed_and_denied if {
	d := shelter_decision
	testing.subset({"R1", "R2", "R6", "R7", "R10"}, {r | some r in d.reasons})
	d.review_required == false
	d.obligations == []
}

test_R13_duplicate_fields_are_decided_once if {
	d := decision.decide(testing.patched(testing.base, "/event/fields", ["age", "age", "nickname"]))
	d.fields == ["age"]
	d.withheld == [{"field": "nickname", "rules": ["R1"]}]
}

test_R2_withheld_field_always_names_a_rule if {
	d := decision.decide(testing.item(
		testing.shelter,
		"service_referral",
		[],
	)) with data.accord.consent.failures as {}
	testing.rules_of(d, "survivor_name") == {"R2"}
}

test_R13_a_plan_decides_every_field_of_the_type_with_what_released_fields_rest_on if {
	[plan, refused] := decision.plans with input as {"items": [testing.base, {}]}
	decided := {w.field | some w in plan.withheld} | object.keys(plan.field_basis)
	typed := object.keys(data.accord.classification.event_types[testing.base.event.type])
	decided == typed | {f | some f in testing.base.event.fields}
	count(plan.field_basis) > 0
	every field, _ in plan.field_basis {
		count(plan.field_reasons[field]) > 0
	}
	object.keys(plan.field_consents) == {f | some f, "consent" in plan.field_basis}
	plan.policy_revision == shelter_decision.policy_revision
	refused.reasons == ["R1"]
	refused.field_reasons == {}
}

test_R13_a_plan_of_the_events_own_fields_is_its_decision if {
	typed := object.keys(data.accord.classification.event_types[testing.base.event.type])
	item := json.patch(testing.base, [{"op": "replace", "path": "/event/fields", "value": sort(typed)}])
	[plan] := decision.plans with input as {"items": [item]}
	object.remove(plan, ["field_reasons", "field_consents"]) == decision.decide(item)
}
