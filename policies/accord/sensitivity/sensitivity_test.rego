package accord.sensitivity_test

import data.accord.decision
import data.accord.sensitivity
import data.accord.testing

everything := [
	"identity", "contact", "location", "shelter_location", "demographics", "victimization",
	"service_need", "case_status", "health", "reproductive_health", "hiv_sti", "mental_health",
	"substance_use", "immigration", "criminal_history", "court", "benefits", "narrative",
]

explicit_everything := testing.consent([testing.permit(["*"], ["*"], everything)])

legal_aid := testing.partner("legal-1", "legal_aid", ["service_referral"])

housing := testing.partner("housing-1", "housing", ["service_referral"])

test_R7_shelter_location_never_leaves_even_with_explicit_consent if {
	d := decision.decide(testing.item(testing.shelter, "service_referral", [explicit_everything]))
	not "shelter_address" in testing.released(d)
	testing.rules_of(d, "shelter_address") == {"R7"}
}

test_R7_internal_fields_never_leave if {
	d := decision.decide(testing.item(legal_aid, "service_referral", [explicit_everything]))
	"narrative" in testing.released(d)
	testing.rules_of(d, "caseworker_notes_internal") == {"R7"}
}

test_R7_internal_event_type_denies_everything if {
	internal_type := json.patch(testing.base, [
		{"op": "replace", "path": "/event/type", "value": "accord.consultation.internal"},
		{"op": "replace", "path": "/event/fields", "value": ["survivor_name", "consulted_at", "consultation_notes"]},
	])
	d := decision.decide(json.patch(
		internal_type,
		[{"op": "replace", "path": "/consents", "value": [explicit_everything]}],
	))
	testing.nothing_released(d)
	d.reasons == ["R7"]
	testing.rules_of(d, "survivor_name") == {"R7"}
}

test_R7_court_order_cannot_release_shelter_location if {
	order := {
		"id": "co-1", "recipient": "shelter-1",
		"fields": ["shelter_address", "caseworker_notes_internal", "survivor_name"],
		"expires_at": "2027-01-01T00:00:00Z",
	}
	d := decision.decide(testing.patched(
		testing.item(testing.shelter, "service_referral", []),
		"/court_orders",
		[order],
	))
	d.fields == ["survivor_name"]
	testing.rules_of(d, "shelter_address") == {"R7"}
	testing.rules_of(d, "caseworker_notes_internal") == {"R7"}
}

test_R10_star_does_not_cover_sensitive_categories if {
	d := decision.decide(testing.item(
		legal_aid,
		"service_referral",
		[testing.consent([testing.permit(["*"], ["*"], ["*"])])],
	))
	"survivor_name" in testing.released(d)
	every field in ["immigration_status", "criminal_record", "narrative"] {
		not field in testing.released(d)
		testing.rules_of(d, field) == {"R10"}
	}
}

test_R10_named_sensitive_category_is_released if {
	d := decision.decide(testing.item(
		legal_aid,
		"service_referral",
		[testing.consent([testing.permit(["legal_aid"], ["*"], ["*", "immigration", "criminal_history"])])],
	))
	testing.subset({"immigration_status", "criminal_record"}, testing.released(d))
	"R10" in d.reasons
	testing.rules_of(d, "narrative") == {"R10"}
}

test_R10_substance_use_carries_redisclosure_notice if {
	bh := testing.partner("bh-1", "behavioral_health", ["service_referral"])
	d := decision.decide(testing.item(
		bh,
		"service_referral",
		[testing.consent([testing.permit(["*"], ["*"], ["*", "substance_use", "mental_health"])])],
	))
	testing.subset({"substance_use_notes", "mental_health_notes"}, testing.released(d))
	d.obligations == [{"kind": "redisclosure_notice", "rule": "R10", "fields": ["substance_use_notes"]}]
}

test_R10_no_notice_without_substance_use_released if {
	d := decision.decide(testing.item(legal_aid, "service_referral", [explicit_everything]))
	d.obligations == []
}

test_R10_immigration_never_to_immigration_enforcement_even_named if {
	ie := object.union(
		testing.partner("ice-1", "immigration_services", ["service_referral"]),
		{"immigration_enforcement": true},
	)
	d := decision.decide(testing.item(
		ie,
		"service_referral",
		[testing.consent([testing.permit_partner("ice-1", ["*"], ["*", "immigration"])])],
	))
	"survivor_name" in testing.released(d)
	not "immigration_status" in testing.released(d)
	testing.rules_of(d, "immigration_status") == {"R10"}
}

test_R10_immigration_services_without_enforcement_may_receive_immigration if {
	is := testing.partner("imm-1", "immigration_services", ["service_referral"])
	d := decision.decide(testing.item(
		is,
		"service_referral",
		[testing.consent([testing.permit(["immigration_services"], ["*"], ["*", "immigration"])])],
	))
	"immigration_status" in testing.released(d)
}

test_R10_criminal_history_never_to_housing_or_employment if {
	every p in [housing, testing.partner("jobs-1", "employment", ["service_referral"])] {
		d := decision.decide(testing.item(p, "service_referral", [explicit_everything]))
		"survivor_name" in testing.released(d)
		testing.rules_of(d, "criminal_record") == {"R10"}
	}
}

test_R10_criminal_history_bar_holds_against_court_orders if {
	order := {
		"id": "co-2",
		"recipient": "housing-1",
		"fields": ["criminal_record"],
		"expires_at": "2027-01-01T00:00:00Z",
	}
	d := decision.decide(testing.patched(testing.item(housing, "service_referral", []), "/court_orders", [order]))
	testing.nothing_released(d)
}

test_R10_sensitive_categories_come_from_data if {
	sensitivity.sensitive("hiv_sti")
	not sensitivity.sensitive("identity")
}

test_R10_bars_are_per_partner if {
	sensitivity.barred_for_partner(testing.item(housing, "service_referral", []), "criminal_history")
	not sensitivity.barred_for_partner(testing.item(legal_aid, "service_referral", []), "criminal_history")
}
