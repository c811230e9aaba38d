# METADATA
# title: Accord sharing decision (entry point)
# description: >-
#   Decides which fields of one event one partner may receive (rules R1–R13 of
#   rules.md). `decision` judges `input` (one item); `batch` judges `input.items` in order.
#   All logic is in functions of the item, so both rules give identical answers.
package accord.decision

import data.accord.consent
import data.accord.eligibility
import data.accord.legal_basis
import data.accord.necessity
import data.accord.reporting
import data.accord.sensitivity
import data.accord.validation

# METADATA
# title: Decision for one event × partner (input is one item)
# entrypoint: true
# custom:
#   rule: R13
decision := decide(input)

# METADATA
# title: Decisions for input.items, one per item, in the same order
# entrypoint: true
# custom:
#   rule: R13
batch := [decide(item) | some item in input.items]

# METADATA
# title: Revision of the policy tree that made the decision
# custom:
#   rule: R13
default policy_revision := "unpinned"

policy_revision := data.accord.meta.revision if is_string(data.accord.meta.revision)

# METADATA
# title: Decide one item
# description: Malformed input and internal-only event types deny every field.
decide(item) := refusal(item, "R1") if {
	not validation.well_formed(item)
} else := refusal(item, "R7") if {
	sensitivity.internal_event_type(item)
} else := judgement(item)

# METADATA
# title: The event's field names (strings only, deduplicated)
event_fields(item) := {field | some field in item.event.fields; is_string(field)}

# METADATA
# title: Category of a field for the event's type; undefined if unclassified (R1)
# custom:
#   rule: R1
category(item, field) := data.accord.classification.event_types[item.event.type][field]

# METADATA
# title: Nothing is released; every field is withheld by one rule
# custom:
#   rule: R1
refusal(item, rule) := {
	"allow": false,
	"fields": [],
	"withheld": [{"field": field, "rules": [rule]} | some field in sort(event_fields(item))],
	"field_basis": {},
	"basis": [],
	"reasons": [rule],
	"consents": [],
	"obligations": [],
	"review_required": false,
	"policy_revision": policy_revision,
}

# METADATA
# title: Field-by-field decision for a well-formed item
judgement(item) := {
	"allow": count(released) > 0,
	"fields": sort(object.keys(released)),
	"withheld": [{"field": field, "rules": sort(withholding_rules(item, field))} | some field in sort(withheld)],
	"field_basis": released,
	"basis": sort({basis | some basis in released}),
	"reasons": sort(allowing | denying),
	"consents": sort(consents_used(item, released)),
	"obligations": obligations(item, released),
	"review_required": needs_review(released),
	"policy_revision": policy_revision,
} if {
	fields := event_fields(item)
	released := {field: basis | some field in fields; basis := release_basis(item, field)}
	withheld := fields - object.keys(released)
	allowing := {rule | some field, basis in released; some rule in allowing_rules(item, field, basis)}
	denying := {rule | some field in withheld; some rule in withholding_rules(item, field)}
}

# METADATA
# title: The basis on which a field is released; undefined if it is withheld
# description: >-
#   Bars first (R1 unclassified, R7, R11 inactive/unvetted, R10 barred recipients), then
#   the first basis that applies: consent, mandated reporting, imminent danger, court order.
release_basis(item, field) := basis if {
	cat := category(item, field)
	not sensitivity.never_leaves(field, cat)
	eligibility.partner_admitted(item)
	not sensitivity.barred_for_partner(item, cat)
	basis := first_basis(item, field, cat)
}

first_basis(item, field, cat) := "consent" if {
	consent_releases(item, cat)
} else := "mandated_reporting" if {
	reporting.mandated_report_releases(item, field)
} else := "imminent_danger" if {
	legal_basis.emergency_releases(item, field)
} else := "court_order" if {
	legal_basis.court_order_releases(item, field)
}

# METADATA
# title: Consent permits the category and the partner may and needs to receive it
# custom:
#   rule: R6
consent_releases(item, cat) if {
	eligibility.may_receive_by_consent(item, cat)
	necessity.needs_to_know(item, cat)
	count(consent.permitting(item, cat)) > 0
}

# METADATA
# title: Rule ids that withhold a field
withholding_rules(item, field) := {"R1"} if {
	not category(item, field)
} else := {"R7"} if {
	sensitivity.never_leaves(field, category(item, field))
} else := {"R11"} if {
	not eligibility.partner_admitted(item)
} else := {"R10"} if {
	sensitivity.barred_for_partner(item, category(item, field))
} else := consent_side_rules(item, category(item, field))

consent_side_rules(item, cat) := rules if {
	rules := (consent.failures(item, cat) | {"R11" | not eligibility.may_receive_by_consent(item, cat)}) | {"R6" | not necessity.needs_to_know(item, cat)}
	count(rules) > 0
} else := {"R2"}

# METADATA
# title: Rule ids that allowed a released field
allowing_rules(item, field, "consent") := ({"R2"} | {"R10" | sensitivity.sensitive(category(item, field))}) | {"R4" | reporting.needs_named_consent(item)}

allowing_rules(_, _, "mandated_reporting") := {"R5"}

allowing_rules(_, _, "imminent_danger") := {"R8"}

allowing_rules(_, _, "court_order") := {"R9"}

consents_used(item, released) := {used |
	some field, basis in released
	basis == "consent"
	some used in consent.permitting(item, category(item, field))
}

# METADATA
# title: Obligations on the recipient
# custom:
#   rule: R10
obligations(item, released) := [{"kind": "redisclosure_notice", "rule": "R10", "fields": fields}] if {
	fields := sort({field | some field, _ in released; sensitivity.needs_redisclosure_notice(category(item, field))})
	count(fields) > 0
} else := []

# METADATA
# title: Imminent-danger and court-order releases are reviewed by compliance
# custom:
#   rule: R8
needs_review(released) if {
	some basis in released
	basis in {"imminent_danger", "court_order"}
} else := false
