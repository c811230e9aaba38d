package accord.eligibility_test

import data.accord.decision
import data.accord.eligibility
import data.accord.testing

shelter_patched(path, value) := decision.decide(testing.patched(testing.base, path, value))

court_order := {
	"id": "co-1", "recipient": "shelter-1",
	"fields": ["survivor_name"], "expires_at": "2027-01-01T00:00:00Z",
}

test_R11_inactive_partner_gets_nothing_on_any_basis if {
	inactive := testing.patched(
		testing.patched(testing.base, "/partner/status", "suspended"),
		"/court_orders",
		[court_order],
	)
	d := decision.decide(inactive)
	testing.nothing_released(d)
	testing.rules_of(d, "survivor_name") == {"R11"}
	testing.rules_of(d, "nickname") == {"R1"}
	testing.rules_of(d, "shelter_address") == {"R7"}
}

test_R11_unvetted_partner_gets_nothing if {
	testing.nothing_released(shelter_patched("/partner/vetted", false))
	testing.nothing_released(decision.decide(json.remove(testing.base, ["/partner/vetted"])))
}

test_R11_lapsed_agreement_denies_everything if {
	d := shelter_patched("/partner/agreements/0/valid_until", "2026-11-24T12:00:00Z")
	testing.nothing_released(d)
	"R11" in testing.rules_of(d, "survivor_name")
}

test_R11_agreement_not_yet_in_force_denies_everything if {
	testing.nothing_released(shelter_patched("/partner/agreements/0/valid_from", "2026-12-01T00:00:00Z"))
}

test_R11_agreement_must_cover_the_purpose if {
	testing.nothing_released(shelter_patched("/partner/agreements/0/purposes", ["care_coordination"]))
}

test_R11_agreement_must_cover_the_category if {
	d := shelter_patched("/partner/agreements/0/categories", ["identity"])
	testing.released(d) == {"survivor_name", "date_of_birth"}
	testing.rules_of(d, "phone") == {"R11"}
}

test_R11_expired_training_denies_everything if {
	d := shelter_patched("/partner/training_attested_until", "2026-11-01T00:00:00Z")
	testing.nothing_released(d)
	testing.rules_of(d, "survivor_name") == {"R11"}
	testing.nothing_released(decision.decide(json.remove(testing.base, ["/partner/training_attested_until"])))
}

test_R11_training_requirement_is_configurable_per_jurisdiction if {
	lapsed := testing.patched(testing.base, "/partner/training_attested_until", "2026-11-01T00:00:00Z")
	d := decision.decide(lapsed) with data.accord.jurisdictions.overrides["state-a"] as {"training_required": false}
	"survivor_name" in testing.released(d)
}

test_R11_legal_bases_do_not_depend_on_the_agreement if {
	cps := json.patch(
		testing.partner("cps-a", "child_welfare", ["mandated_report"]),
		[{"op": "replace", "path": "/agreements", "value": []}],
	)
	d := decision.decide(testing.minor_case("state-a", cps, "mandated_report", []))
	"survivor_name" in testing.released(d)
	d.basis == ["mandated_reporting"]
}

test_R11_eligibility_is_per_category if {
	narrow := testing.patched(testing.base, "/partner/agreements/0/categories", ["identity"])
	eligibility.may_receive_by_consent(narrow, "identity")
	not eligibility.may_receive_by_consent(narrow, "contact")
}
