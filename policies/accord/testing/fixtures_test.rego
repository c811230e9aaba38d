# METADATA
# title: Shared test fixtures
# description: >-
#   Items for the policy tests. The base item is an adult's referral (state-a) to an
#   eligible shelter, with a consent permitting every ordinary category ("*") to shelters,
#   victim services and health partners for service referral and care coordination.
package accord.testing

now := "2026-11-24T12:00:00Z"

referral_fields := [
	"age", "benefits_status", "caseworker_notes_internal", "criminal_record", "current_location",
	"date_of_birth", "email", "exploitation_type", "gender", "hiv_status", "immigration_status",
	"medical_needs", "mental_health_notes", "narrative", "nickname", "phone", "pregnancy_status",
	"primary_language", "referral_id", "referral_reason", "referred_to", "reported_at",
	"reporting_agency", "safety_status", "service_needs", "shelter_address", "substance_use_notes",
	"survivor_name", "urgency",
]

identified_fields := [
	"age", "caseworker_notes_internal", "current_location", "date_of_birth",
	"exploitation_indicators", "exploitation_type", "gender", "identified_by_role",
	"immigration_status", "narrative", "phone", "primary_language", "reported_at",
	"reporting_agency", "safety_status", "survivor_name",
]

all_categories := data.accord.vocabulary.categories

permit(types, purposes, categories) := {
	"type": "permit",
	"recipients": {"partners": [], "partner_types": types},
	"purposes": purposes,
	"categories": categories,
	"period": {"start": "2026-01-01T00:00:00Z", "end": null},
}

permit_partner(id, purposes, categories) := {
	"type": "permit",
	"recipients": {"partners": [id], "partner_types": []},
	"purposes": purposes,
	"categories": categories,
	"period": {"start": "2026-01-01T00:00:00Z", "end": null},
}

deny(types, purposes, categories) := object.union(permit(types, purposes, categories), {"type": "deny"})

consent(provisions) := {
	"id": "c-1",
	"version": 3,
	"status": "active",
	"recorded_by": {"role": "self"},
	"provisions": provisions,
}

ordinary_consent := consent([permit(
	["shelter", "victim_services", "health"],
	["service_referral", "care_coordination"],
	["*"],
)])

partner(id, type, purposes) := {
	"id": id,
	"type": type,
	"status": "active",
	"vetted": true,
	"immigration_enforcement": false,
	"agreements": [{
		"id": concat("-", ["mou", id]),
		"purposes": purposes,
		"categories": all_categories,
		"valid_from": "2026-01-01T00:00:00Z",
		"valid_until": "2027-01-01T00:00:00Z",
	}],
	"training_attested_until": "2027-06-01T00:00:00Z",
}

shelter := partner("shelter-1", "shelter", ["service_referral", "care_coordination"])

police := partner("police-1", "law_enforcement", ["investigation", "emergency_response"])

base := {
	"now": now,
	"purpose": "service_referral",
	"event": {
		"id": "evt-1",
		"type": "accord.referral.made",
		"time": "2026-11-24T11:59:00Z",
		"agency": {"id": "agency-a", "jurisdiction": "state-a"},
		"survivor": {"id": "sv-9f2c", "age": 24},
		"fields": referral_fields,
	},
	"partner": shelter,
	"consents": [ordinary_consent],
	"declarations": [],
	"court_orders": [],
}

# An item for another partner, purpose and consents (everything else from base).
item(partner_doc, purpose, consents) := json.patch(base, [
	{"op": "replace", "path": "/partner", "value": partner_doc},
	{"op": "replace", "path": "/purpose", "value": purpose},
	{"op": "replace", "path": "/consents", "value": consents},
])

# A minor's suspected case identified, published in the given jurisdiction.
minor_case(jurisdiction, partner_doc, purpose, consents) := json.patch(item(partner_doc, purpose, consents), [
	{"op": "replace", "path": "/event/type", "value": "accord.case.identified"},
	{"op": "replace", "path": "/event/fields", "value": identified_fields},
	{"op": "replace", "path": "/event/survivor/age", "value": 15},
	{"op": "replace", "path": "/event/agency/jurisdiction", "value": jurisdiction},
])

patched(doc, path, value) := json.patch(doc, [{"op": "add", "path": path, "value": value}])

released(decision) := {field | some field in decision.fields}

rules_of(decision, field) := {rule | some entry in decision.withheld; entry.field == field; some rule in entry.rules}

withheld(decision) := {entry.field | some entry in decision.withheld}

# Everything the event had, released or withheld: nothing lost, nothing invented.
accounts_for_every_field(item_doc, decision) if {
	every field in item_doc.event.fields {
		field in (released(decision) | withheld(decision))
	}
	count(released(decision) & withheld(decision)) == 0
}

nothing_released(decision) if {
	decision.allow == false
	decision.fields == []
	decision.field_basis == {}
}

# Every element of `part` is in `whole` (sets).
subset(part, whole) if count(part - whole) == 0
