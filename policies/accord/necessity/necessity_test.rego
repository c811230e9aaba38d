package accord.necessity_test

import data.accord.decision
import data.accord.necessity
import data.accord.testing

hiv_consent := testing.consent([
	testing.permit(["shelter", "health"], ["service_referral", "care_coordination"], ["*", "hiv_sti"]),
])

clinic := testing.partner("clinic-1", "health", ["care_coordination"])

test_R6_shelter_does_not_get_hiv_status_even_with_explicit_consent if {
	d := decision.decide(testing.item(testing.shelter, "service_referral", [hiv_consent]))
	not "hiv_status" in testing.released(d)
	testing.rules_of(d, "hiv_status") == {"R6"}
	"survivor_name" in testing.released(d)
}

test_R6_health_partner_needs_hiv_status if {
	d := decision.decide(testing.item(clinic, "care_coordination", [hiv_consent]))
	"hiv_status" in testing.released(d)
	d.field_basis.hiv_status == "consent"
	not "exploitation_type" in testing.released(d)
	testing.rules_of(d, "exploitation_type") == {"R6"}
}

test_R6_no_matrix_cell_means_no_need_to_know if {
	research := testing.partner("uni-1", "community_org", ["research_deidentified"])
	d := decision.decide(testing.item(
		research,
		"research_deidentified",
		[testing.consent([testing.permit(["*"], ["*"], ["*"])])],
	))
	testing.nothing_released(d)
	testing.rules_of(d, "age") == {"R6"}
}

test_R6_legal_basis_releases_exact_fields_not_need_to_know if {
	order := {"id": "co-1", "recipient": "shelter-1", "fields": ["hiv_status"], "expires_at": "2027-01-01T00:00:00Z"}
	d := decision.decide(testing.patched(
		testing.item(testing.shelter, "service_referral", []),
		"/court_orders",
		[order],
	))
	d.fields == ["hiv_status"]
	d.field_basis.hiv_status == "court_order"
}

test_R6_matrix_is_read_from_data if {
	necessity.needs_to_know(testing.base, "identity")
	not necessity.needs_to_know(testing.base, "hiv_sti")
	not necessity.needs_to_know(
		testing.base,
		"identity",
	) with data.accord.need_to_know.shelter.service_referral as ["contact"]
}
