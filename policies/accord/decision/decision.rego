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
# schemas:
#   - input: schema.input
# custom:
#   rule: R13
decision := decide(input)

# METADATA
# title: Decisions for input.items, one per item, in the same order
# entrypoint: true
# schemas:
#   - input: schema.input
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
# description: >-
#   Facts about the item (eligibility, consents, legal bases) are gathered once; the
#   consent side depends only on the category, so it is judged once per category
#   present in the event (`outcomes`); then each field is judged.
judgement(item) := {
	"allow": count(released) > 0,
	"fields": sort(object.keys(released)),
	"withheld": [{"field": field, "rules": sort(rules)} | some field, rules in withheld],
	"field_basis": released,
	"basis": sort({basis | some basis in released}),
	"reasons": sort(allowing | denying),
	"consents": sort({used | some field, "consent" in released; some used in outcomes[classified[field]].consents}),
	"obligations": obligations(classified, released),
	"review_required": needs_review(released),
	"policy_revision": policy_revision,
} if {
	fields := event_fields(item)
	classified := {field: category(item, field) | some field in fields}
	known := facts(item)
	outcomes := {cat: consent_outcome(known, cat) | some cat in classified}
	released := {field: basis | some field, cat in classified; basis := release_basis(known, field, cat, outcomes[cat])}
	withheld := {field: withholding_rules(known, field, classified, outcomes) | some field in fields; not released[field]}
	allowing := {rule | some field, basis in released; some rule in allowing_rules(known, classified[field], basis)}
	denying := {rule | some rules in withheld; some rule in rules}
}

# METADATA
# title: What the concerns say about this item, gathered once
facts(item) := {
	"admitted": eligibility.admitted(item),
	"consent": consent.view(item),
	"consent_categories": eligibility.consent_categories(item),
	"needed_categories": necessity.needed_categories(item),
	"barred_categories": sensitivity.barred_categories(item),
	"mandated_fields": reporting.mandated_fields(item),
	"emergency_fields": legal_basis.emergency_fields(item),
	"court_order_fields": legal_basis.court_order_fields(item),
}

# METADATA
# title: The consent side of one category
# description: >-
#   consents: the consents (id, version) that release the category; empty if it is not
#   released by consent, and then rules names every rule that withholds it (R2, R3, R4,
#   R5, R6, R10, R11; R2 if none more specific applies).
# custom:
#   rule: R2
consent_outcome(known, cat) := {"consents": permitting, "rules": set()} if {
	cat in known.consent_categories
	cat in known.needed_categories
	permitting := consent.permitting(known.consent, cat)
	count(permitting) > 0
} else := {"consents": set(), "rules": consent_side_rules(known, cat)}

consent_side_rules(known, cat) := rules if {
	rules := (consent.failures(known.consent, cat) | {"R11" | not cat in known.consent_categories}) | {"R6" | not cat in known.needed_categories}
	count(rules) > 0
} else := {"R2"}

# METADATA
# title: The basis on which a field is released; undefined if it is withheld
# description: >-
#   Bars first (R7, R11 inactive/unvetted, R10 barred recipients; unclassified fields
#   never get here, R1), then the first basis that applies: consent, mandated reporting,
#   imminent danger, court order.
release_basis(known, field, cat, outcome) := basis if {
	not sensitivity.never_leaves(field, cat)
	known.admitted == true
	not cat in known.barred_categories
	basis := first_basis(known, field, outcome)
}

first_basis(known, field, outcome) := "consent" if {
	count(outcome.consents) > 0
} else := "mandated_reporting" if {
	field in known.mandated_fields
} else := "imminent_danger" if {
	field in known.emergency_fields
} else := "court_order" if {
	field in known.court_order_fields
}

# METADATA
# title: Rule ids that withhold a field
withholding_rules(known, field, classified, outcomes) := {"R1"} if {
	not classified[field]
} else := {"R7"} if {
	sensitivity.never_leaves(field, classified[field])
} else := {"R11"} if {
	known.admitted == false
} else := {"R10"} if {
	classified[field] in known.barred_categories
} else := outcomes[classified[field]].rules

# METADATA
# title: Rule ids that allowed a released field
allowing_rules(known, cat, "consent") := ({"R2"} | {"R10" | sensitivity.sensitive(cat)}) | {"R4" | known.consent.named_consent_required}

allowing_rules(_, _, "mandated_reporting") := {"R5"}

allowing_rules(_, _, "imminent_danger") := {"R8"}

allowing_rules(_, _, "court_order") := {"R9"}

# METADATA
# title: Obligations on the recipient
# custom:
#   rule: R10
obligations(classified, released) := [{"kind": "redisclosure_notice", "rule": "R10", "fields": fields}] if {
	fields := sort({field | some field, _ in released; sensitivity.needs_redisclosure_notice(classified[field])})
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
