package accord.reporting_test

import data.accord.decision
import data.accord.reporting
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

cps(id) := testing.partner(id, "child_welfare", ["mandated_report", "care_coordination"])

prosecutor := testing.partner("da-1", "prosecution", ["prosecution"])

test_R4_adult_law_enforcement_without_consent_gets_nothing if {
	d := decision.decide(testing.item(testing.police, "investigation", []))
	testing.nothing_released(d)
	testing.accounts_for_every_field(testing.base, d)
}

test_R4_adult_law_enforcement_not_reached_by_star_consent if {
	d := decision.decide(testing.item(
		testing.police,
		"investigation",
		[testing.consent([testing.permit(["*"], ["*"], ["*"])])],
	))
	testing.nothing_released(d)
	testing.rules_of(d, "survivor_name") == {"R4"}
	"R4" in d.reasons
}

test_R4_adult_law_enforcement_named_by_type_receives_what_it_needs if {
	d := decision.decide(testing.item(
		testing.police,
		"investigation",
		[testing.consent([testing.permit(["law_enforcement"], ["investigation"], ["*"])])],
	))
	testing.subset({"survivor_name", "phone", "current_location", "exploitation_type"}, testing.released(d))
	not "service_needs" in testing.released(d)
	testing.rules_of(d, "service_needs") == {"R6"}
	testing.subset({"R2", "R4"}, {r | some r in d.reasons})
}

test_R4_adult_prosecution_named_by_partner_id_receives if {
	d := decision.decide(testing.item(
		prosecutor,
		"prosecution",
		[testing.consent([testing.permit_partner("da-1", ["prosecution"], ["*"])])],
	))
	"survivor_name" in testing.released(d)
}

test_R4_adult_court_not_reached_by_star_consent if {
	court := testing.partner("court-1", "court", ["court_proceeding"])
	testing.nothing_released(decision.decide(testing.item(
		court,
		"court_proceeding",
		[testing.consent([testing.permit(["*"], ["*"], ["*"])])],
	)))
}

test_R4_immigration_enforcement_needs_named_consent if {
	ie := object.union(
		testing.partner("ice-1", "immigration_services", ["service_referral"]),
		{"immigration_enforcement": true},
	)
	star := decision.decide(testing.item(
		ie,
		"service_referral",
		[testing.consent([testing.permit(["*"], ["*"], ["*"])])],
	))
	testing.nothing_released(star)
	"R4" in testing.rules_of(star, "survivor_name")
	by_type := decision.decide(testing.item(
		ie,
		"service_referral",
		[testing.consent([testing.permit(["immigration_services"], ["*"], ["*"])])],
	))
	"survivor_name" in testing.released(by_type)
}

test_R4_named_consent_must_cover_sensitive_category_itself if {
	two := testing.consent([
		testing.permit(["law_enforcement"], ["investigation"], ["*"]),
		testing.permit(["*"], ["investigation"], ["victimization", "immigration"]),
	])
	d := decision.decide(testing.item(testing.police, "investigation", [two]))
	"exploitation_type" in testing.released(d)
	not "immigration_status" in testing.released(d)
	testing.rules_of(d, "immigration_status") == {"R4", "R6"}
}

test_R4_unknown_age_is_protected_like_an_adult if {
	unknown := testing.patched(
		testing.item(testing.police, "investigation", [testing.consent([testing.permit(["*"], ["*"], ["*"])])]),
		"/event/survivor/age",
		null,
	)
	testing.nothing_released(decision.decide(unknown))
	no_survivor := json.remove(unknown, ["/event/survivor"])
	testing.nothing_released(decision.decide(no_survivor))
	not reporting.minor(no_survivor)
}

test_R4_services_do_not_depend_on_law_enforcement_consent if {
	d := decision.decide(testing.base)
	d.allow == true
	not reporting.needs_named_consent(testing.base)
}

test_R5_minor_child_welfare_gets_mandated_report_without_consent if {
	reporting.minor(testing.minor_case("state-a", cps("cps-a"), "mandated_report", []))
	d := decision.decide(testing.minor_case("state-a", cps("cps-a"), "mandated_report", []))
	testing.released(d) == mandated_set
	every field in d.fields {
		d.field_basis[field] == "mandated_reporting"
	}
	d.basis == ["mandated_reporting"]
	"R5" in d.reasons
	d.consents == []
}

test_R5_mandated_report_ignores_a_deny_everything_consent if {
	no := testing.consent([testing.deny(["*"], ["*"], ["*"])])
	d := decision.decide(testing.minor_case("state-a", cps("cps-a"), "mandated_report", [no]))
	testing.released(d) == mandated_set
}

test_R5_minor_other_fields_still_need_consent if {
	d := decision.decide(testing.minor_case("state-a", cps("cps-a"), "care_coordination", []))
	not "phone" in testing.released(d)
	testing.rules_of(d, "phone") == {"R2"}
	with_consent := decision.decide(testing.minor_case(
		"state-a",
		cps("cps-a"),
		"care_coordination",
		[testing.consent([testing.permit(["child_welfare"], ["care_coordination"], ["contact"])])],
	))
	with_consent.field_basis.phone == "consent"
	with_consent.field_basis.exploitation_type == "mandated_reporting"
	with_consent.basis == ["consent", "mandated_reporting"]
}

test_R5_adult_child_welfare_gets_nothing_without_consent if {
	adult := testing.patched(
		testing.minor_case("state-a", cps("cps-a"), "mandated_report", []),
		"/event/survivor/age",
		18,
	)
	testing.nothing_released(decision.decide(adult))
}

test_R5_unknown_age_triggers_no_mandated_report if {
	unknown := testing.patched(
		testing.minor_case("state-a", cps("cps-a"), "mandated_report", []),
		"/event/survivor/age",
		null,
	)
	testing.nothing_released(decision.decide(unknown))
}

test_R5_unknown_age_to_a_mandated_report_recipient_is_flagged_for_review if {
	unknown := testing.patched(
		testing.minor_case("state-a", cps("cps-a"), "mandated_report", []),
		"/event/survivor/age",
		null,
	)
	d := decision.decide(unknown)
	d.flags == ["age_unknown"]
	d.review_required == true
	d.basis == []
	no_survivor := decision.decide(json.remove(unknown, ["/event/survivor"]))
	no_survivor.flags == ["age_unknown"]
	no_survivor.review_required == true
}

test_R5_unknown_age_flag_follows_the_jurisdictions_recipients if {
	# state-b sends mandated reports to law enforcement too; state-a does not.
	police_b := testing.patched(
		testing.minor_case("state-b", testing.police, "investigation", []),
		"/event/survivor/age",
		null,
	)
	decision.decide(police_b).flags == ["age_unknown"]
	police_a := testing.patched(
		testing.minor_case("state-a", testing.police, "investigation", []),
		"/event/survivor/age",
		null,
	)
	decision.decide(police_a).flags == []
	decision.decide(police_a).review_required == false
	elsewhere := object.union(cps("cps-b"), {"jurisdiction": "state-b"})
	other := testing.patched(
		testing.minor_case("state-a", elsewhere, "mandated_report", []),
		"/event/survivor/age",
		null,
	)
	decision.decide(other).flags == []
}

test_R5_a_known_age_is_never_flagged if {
	minor := decision.decide(testing.minor_case("state-a", cps("cps-a"), "mandated_report", []))
	minor.flags == []
	minor.review_required == false
	adult := decision.decide(testing.patched(
		testing.minor_case("state-a", cps("cps-a"), "mandated_report", []),
		"/event/survivor/age",
		30,
	))
	adult.flags == []
	adult.review_required == false
	decision.decide(testing.base).flags == []
}

test_R5_unknown_age_releases_under_consent_as_for_an_adult if {
	care := testing.consent([testing.permit(["child_welfare"], ["care_coordination"], ["contact"])])
	unknown := testing.patched(
		testing.minor_case("state-a", cps("cps-a"), "care_coordination", [care]),
		"/event/survivor/age",
		null,
	)
	d := decision.decide(unknown)
	testing.released(d) == {"phone"}
	d.basis == ["consent"]
	d.flags == ["age_unknown"]
}

test_R5_state_a_law_enforcement_gets_no_mandated_report if {
	testing.nothing_released(decision.decide(testing.minor_case("state-a", testing.police, "investigation", [])))
}

test_R5_partner_of_another_jurisdiction_gets_no_mandated_report if {
	elsewhere := object.union(cps("cps-b"), {"jurisdiction": "state-b"})
	testing.nothing_released(decision.decide(testing.minor_case("state-a", elsewhere, "mandated_report", [])))
	here := object.union(cps("cps-a"), {"jurisdiction": "state-a"})
	testing.released(decision.decide(testing.minor_case("state-a", here, "mandated_report", []))) == mandated_set
}

test_R5_mandated_report_still_withholds_never_shared_fields if {
	d := decision.decide(testing.minor_case("state-a", cps("cps-a"), "mandated_report", []))
	testing.rules_of(d, "caseworker_notes_internal") == {"R7"}
}

test_R5_mandated_report_release_is_per_field if {
	it := testing.minor_case("state-a", cps("cps-a"), "mandated_report", [])
	reporting.mandated_report_releases(it, "exploitation_type")
	not reporting.mandated_report_releases(it, "phone")
}
