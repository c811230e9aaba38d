package accord.jurisdiction_test

import data.accord.decision
import data.accord.jurisdiction
import data.accord.testing

mandated_set := {
	"survivor_name",
	"date_of_birth",
	"age",
	"exploitation_type",
	"safety_status",
	"reporting_agency",
	"reported_at",
}

test_R12_state_b_law_enforcement_receives_mandated_reports_state_a_does_not if {
	testing.released(decision.decide(testing.minor_case(
		"state-b",
		testing.police,
		"investigation",
		[],
	))) == mandated_set
	testing.nothing_released(decision.decide(testing.minor_case("state-a", testing.police, "investigation", [])))
}

test_R12_imminent_danger_lasts_48h_in_state_b_24h_in_state_a if {
	thirty_hours_ago := {
		"id": "d-1",
		"kind": "imminent_danger",
		"agency": "agency-a",
		"declared_at": "2026-11-23T06:00:00Z",
		"ended_at": null,
	}
	police_a := object.union(testing.police, {"jurisdiction": "state-a"})
	base := testing.patched(testing.item(police_a, "emergency_response", []), "/declarations", [thirty_hours_ago])
	testing.nothing_released(decision.decide(base))
	in_b := json.patch(base, [
		{"op": "replace", "path": "/event/agency/jurisdiction", "value": "state-b"},
		{"op": "replace", "path": "/partner/jurisdiction", "value": "state-b"},
	])
	d := decision.decide(in_b)
	d.basis == ["imminent_danger"]
	jurisdiction.settings("state-a").imminent_danger.hours == 24
	jurisdiction.settings("state-b").imminent_danger.hours == 48
}

test_R12_need_to_know_override_in_state_b if {
	school := testing.partner("school-1", "education", ["care_coordination"])
	star := [testing.consent([testing.permit(["education"], ["care_coordination"], ["*"])])]
	in_a := decision.decide(testing.item(school, "care_coordination", star))
	in_b := decision.decide(testing.patched(
		testing.item(school, "care_coordination", star),
		"/event/agency/jurisdiction",
		"state-b",
	))
	"safety_status" in testing.released(in_a)
	not "safety_status" in testing.released(in_b)
	testing.rules_of(in_b, "safety_status") == {"R6"}
	"survivor_name" in testing.released(in_b)
}

test_R12_age_of_majority_is_per_jurisdiction if {
	cps := testing.partner("cps-a", "child_welfare", ["mandated_report"])
	nineteen := testing.patched(testing.minor_case("state-a", cps, "mandated_report", []), "/event/survivor/age", 19)
	testing.nothing_released(decision.decide(nineteen))
	d := decision.decide(nineteen) with data.accord.jurisdictions.overrides["state-a"] as {"age_of_majority": 21}
	d.basis == ["mandated_reporting"]
}

test_R12_settings_overlay_the_default if {
	a := jurisdiction.settings("state-a")
	b := jurisdiction.settings("state-b")
	a.mandated_report.recipients == ["child_welfare"]
	b.mandated_report.recipients == ["child_welfare", "law_enforcement"]
	a.mandated_report.fields == b.mandated_report.fields
	a.age_of_majority == 18
	b.age_of_majority == 18
	b.need_to_know.shelter == a.need_to_know.shelter
}

test_R12_only_configured_jurisdictions_are_known if {
	jurisdiction.known("state-a")
	jurisdiction.known("state-b")
	not jurisdiction.known("default")
	not jurisdiction.known("atlantis")
	not jurisdiction.known(7)
}
