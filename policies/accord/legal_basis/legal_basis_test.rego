package accord.legal_basis_test

import data.accord.decision
import data.accord.legal_basis
import data.accord.testing

declaration(declared_at, ended_at) := {
	"id": "d-1", "kind": "imminent_danger", "agency": "agency-a",
	"declared_at": declared_at, "ended_at": ended_at,
}

emergency_set := {"survivor_name", "date_of_birth", "current_location", "safety_status"}

# An event of this jurisdiction, to the law-enforcement partner of the same jurisdiction.
police_in(jurisdiction, declarations) := police_of_in(jurisdiction, jurisdiction, declarations)

# An event of jurisdiction event_j, to a law-enforcement partner of partner_j.
police_of_in(partner_j, event_j, declarations) := json.patch(testing.item(testing.police, "emergency_response", []), [
	{"op": "replace", "path": "/declarations", "value": declarations},
	{"op": "replace", "path": "/event/agency/jurisdiction", "value": event_j},
	{"op": "add", "path": "/partner/jurisdiction", "value": partner_j},
])

declared_now := [declaration("2026-11-24T10:00:00Z", null)]

# state-a names state-b as a neighbour for R8 (state-b names none).
neighbours := object.union(
	data.accord.jurisdictions.overrides,
	{"state-a": {"imminent_danger": {"neighbouring_jurisdictions": ["state-b"]}}},
)

order(recipient, fields, expires_at) := {
	"id": "co-1", "recipient": recipient,
	"fields": fields, "expires_at": expires_at,
}

court_partner := testing.partner("court-1", "court", ["court_proceeding"])

with_order(o) := testing.patched(testing.item(court_partner, "court_proceeding", []), "/court_orders", [o])

test_R8_imminent_danger_gives_law_enforcement_the_emergency_set if {
	d := decision.decide(police_in("state-a", [declaration("2026-11-24T10:00:00Z", null)]))
	testing.released(d) == emergency_set
	d.basis == ["imminent_danger"]
	d.field_basis.current_location == "imminent_danger"
	d.review_required == true
	"R8" in d.reasons
	testing.rules_of(d, "phone") == {"R2", "R4", "R6"}
}

test_R8_emergency_services_are_recipients_too if {
	ems := object.union(
		testing.partner("ems-1", "emergency_services", ["emergency_response"]),
		{"jurisdiction": "state-a"},
	)
	it := testing.patched(testing.item(ems, "emergency_response", []), "/declarations", declared_now)
	testing.released(decision.decide(it)) == emergency_set
}

test_R8_law_enforcement_of_another_jurisdiction_gets_nothing if {
	it := police_of_in("state-b", "state-a", declared_now)
	testing.nothing_released(decision.decide(it))
	not legal_basis.emergency_releases(it, "current_location")
	testing.nothing_released(decision.decide(police_of_in("state-a", "state-b", declared_now)))
}

test_R8_emergency_services_of_another_jurisdiction_get_nothing if {
	ems := object.union(
		testing.partner("ems-b", "emergency_services", ["emergency_response"]),
		{"jurisdiction": "state-b"},
	)
	it := testing.patched(testing.item(ems, "emergency_response", []), "/declarations", declared_now)
	testing.nothing_released(decision.decide(it))
}

test_R8_partner_without_a_jurisdiction_gets_nothing if {
	no_jurisdiction := testing.patched(
		testing.item(testing.police, "emergency_response", []),
		"/declarations",
		declared_now,
	)
	testing.nothing_released(decision.decide(no_jurisdiction))
	null_jurisdiction := json.patch(no_jurisdiction, [{"op": "add", "path": "/partner/jurisdiction", "value": null}])
	testing.nothing_released(decision.decide(null_jurisdiction))
}

test_R8_a_configured_neighbouring_jurisdiction_receives_the_emergency_set if {
	d := decision.decide(police_of_in(
		"state-b",
		"state-a",
		declared_now,
	)) with data.accord.jurisdictions.overrides as neighbours
	testing.released(d) == emergency_set
	d.basis == ["imminent_danger"]

	# One way only: state-b did not name state-a.
	back := decision.decide(police_of_in(
		"state-a",
		"state-b",
		declared_now,
	)) with data.accord.jurisdictions.overrides as neighbours
	testing.nothing_released(back)

	# And a third jurisdiction's partner is still out (unknown to the policy, so not named).
	far := decision.decide(police_of_in(
		"state-c",
		"state-a",
		declared_now,
	)) with data.accord.jurisdictions.overrides as neighbours
	testing.nothing_released(far)
}

test_R8_no_declaration_no_emergency_release if {
	testing.nothing_released(decision.decide(police_in("state-a", [])))
}

test_R8_declaration_lapses_after_the_jurisdiction_duration if {
	at_24h := decision.decide(police_in("state-a", [declaration("2026-11-23T12:00:00Z", null)]))
	testing.nothing_released(at_24h)
	just_inside := decision.decide(police_in("state-a", [declaration("2026-11-23T12:00:01Z", null)]))
	testing.released(just_inside) == emergency_set
}

test_R8_ended_declaration_gives_nothing if {
	testing.nothing_released(decision.decide(police_in(
		"state-a",
		[declaration("2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z")],
	)))
}

test_R8_future_declaration_gives_nothing if {
	testing.nothing_released(decision.decide(police_in("state-a", [declaration("2026-11-24T13:00:00Z", null)])))
}

test_R8_declaration_by_another_agency_is_ignored if {
	other := object.union(declaration("2026-11-24T10:00:00Z", null), {"agency": "agency-z"})
	testing.nothing_released(decision.decide(police_in("state-a", [other])))
}

test_R8_shelter_is_not_an_emergency_recipient if {
	shelter_a := object.union(testing.shelter, {"jurisdiction": "state-a"}) # only its type keeps it out
	it := testing.patched(testing.item(shelter_a, "service_referral", []), "/declarations", declared_now)
	testing.nothing_released(decision.decide(it))
	not legal_basis.emergency_releases(it, "current_location")
}

test_R9_court_order_releases_exactly_its_fields if {
	d := decision.decide(with_order(order(
		"court-1",
		["hearing_date", "survivor_name", "phone", "shelter_address"],
		"2027-01-01T00:00:00Z",
	)))
	d.fields == ["phone", "survivor_name"]
	d.basis == ["court_order"]
	d.review_required == true
	"R9" in d.reasons
	testing.rules_of(d, "shelter_address") == {"R7"}
	testing.rules_of(d, "age") == {"R2", "R4"}
}

test_R9_expired_court_order_releases_nothing if {
	testing.nothing_released(decision.decide(with_order(order("court-1", ["survivor_name"], "2026-11-24T12:00:00Z"))))
}

test_R9_order_for_another_recipient_releases_nothing if {
	testing.nothing_released(decision.decide(with_order(order("court-2", ["survivor_name"], "2027-01-01T00:00:00Z"))))
}

test_R9_order_without_an_id_releases_nothing if {
	testing.nothing_released(decision.decide(with_order(json.remove(
		order("court-1", ["survivor_name"], "2027-01-01T00:00:00Z"),
		["/id"],
	))))
}

test_R9_consent_basis_takes_precedence_and_needs_no_review if {
	it := json.patch(with_order(order("court-1", ["survivor_name"], "2027-01-01T00:00:00Z")), [{
		"op": "replace",
		"path": "/consents",
		"value": [testing.consent([testing.permit(["court"], ["court_proceeding"], ["identity"])])],
	}])
	d := decision.decide(it)
	d.field_basis.survivor_name == "consent"
	d.review_required == false
}

test_R8_emergency_release_is_per_field if {
	it := police_in("state-a", [declaration("2026-11-24T10:00:00Z", null)])
	legal_basis.emergency_releases(it, "current_location")
	not legal_basis.emergency_releases(it, "phone")
}

test_R9_court_order_release_is_per_field if {
	it := with_order(order("court-1", ["survivor_name"], "2027-01-01T00:00:00Z"))
	legal_basis.court_order_releases(it, "survivor_name")
	not legal_basis.court_order_releases(it, "age")
}
