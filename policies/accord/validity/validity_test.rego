package accord.validity_test

import data.accord.decision
import data.accord.testing
import data.accord.validity

ns(ts) := time.parse_rfc3339_ns(ts)

# The base item's only future time is its shelter's agreement end (2027-01-01); the training
# attestation runs until 2027-06-01.
test_R13_valid_until_is_the_earliest_future_time_of_the_input if {
	validity.valid_until(testing.base) == ns("2027-01-01T00:00:00Z")
	decision.decide(testing.base).valid_until == ns("2027-01-01T00:00:00Z")
}

with_period(start, end) := testing.patched(testing.base, "/consents", [testing.consent([object.union(
	testing.permit(["shelter"], ["service_referral"], ["*"]),
	{"period": {"start": start, "end": end}},
)])])

test_R3_a_consent_ending_or_starting_ahead_bounds_the_decision if {
	validity.valid_until(with_period("2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z")) == ns("2026-12-01T00:00:00Z")
	validity.valid_until(with_period("2026-11-25T00:00:00Z", null)) == ns("2026-11-25T00:00:00Z")
}

test_R13_a_time_equal_to_now_is_not_ahead if {
	validity.valid_until(with_period("2026-01-01T00:00:00Z", testing.now)) == ns("2027-01-01T00:00:00Z")
}

test_R13_malformed_times_are_not_ahead if {
	validity.valid_until(with_period("soon", "2026-12-32T00:00:00Z")) == ns("2027-01-01T00:00:00Z")
}

test_R11_training_ending_first_bounds_the_decision if {
	it := testing.patched(testing.base, "/partner/training_attested_until", "2026-11-30T00:00:00Z")
	validity.valid_until(it) == ns("2026-11-30T00:00:00Z")
}

test_R11_an_agreement_starting_ahead_bounds_the_decision if {
	later := object.union(testing.shelter.agreements[0], {"valid_from": "2026-12-15T00:00:00Z"})
	it := testing.patched(testing.base, "/partner/agreements", [later])
	validity.valid_until(it) == ns("2026-12-15T00:00:00Z")
}

declared(at, ended_at) := testing.patched(testing.base, "/declarations", [{
	"id": "d-1", "kind": "imminent_danger", "agency": "agency-a",
	"declared_at": at, "ended_at": ended_at,
}])

test_R8_a_declaration_bounds_the_decision_by_its_start_end_and_lapse if {
	# state-a: 24 hours
	validity.valid_until(declared("2026-11-24T10:00:00Z", null)) == ns("2026-11-25T10:00:00Z")
	validity.valid_until(declared("2026-11-24T10:00:00Z", "2026-11-24T13:00:00Z")) == ns("2026-11-24T13:00:00Z")
	validity.valid_until(declared("2026-11-24T18:00:00Z", null)) == ns("2026-11-24T18:00:00Z")
}

test_R8_the_lapse_follows_the_jurisdiction_hours if {
	it := testing.patched(declared("2026-11-24T10:00:00Z", null), "/event/agency/jurisdiction", "state-b")
	validity.valid_until(it) == ns("2026-11-26T10:00:00Z")
}

test_R9_a_court_order_expiring_first_bounds_the_decision if {
	order := {"id": "o-1", "recipient": "shelter-1", "fields": ["phone"], "expires_at": "2026-12-24T00:00:00Z"}
	validity.valid_until(testing.patched(testing.base, "/court_orders", [order])) == ns("2026-12-24T00:00:00Z")
}

test_R13_nothing_ahead_means_valid_until_null if {
	it := testing.patched(testing.base, "/now", "2028-01-01T00:00:00Z")
	validity.valid_until(it) == null
	decision.decide(it).valid_until == null
}

test_R13_a_refusal_does_not_depend_on_time if {
	decision.decide(testing.patched(testing.base, "/purpose", "marketing")).valid_until == null
}

# Just before valid_until the decision is the one at now; at valid_until it may differ.
test_R13_the_decision_holds_until_valid_until if {
	it := with_period("2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z")
	before := json.patch(it, [{"op": "replace", "path": "/now", "value": "2026-11-30T23:59:59.999999999Z"}])
	at := json.patch(it, [{"op": "replace", "path": "/now", "value": "2026-12-01T00:00:00Z"}])
	object.remove(decision.decide(before), ["valid_until"]) == object.remove(decision.decide(it), ["valid_until"])
	decision.decide(at).fields != decision.decide(it).fields
}
