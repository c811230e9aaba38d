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
import data.accord.validity

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
# title: The event's fields by what its type says of them (R1 unclassified, R7 internal)
# description: >-
#   classified: field → category for the event's type (unclassified fields left out);
#   releasable: the classified fields that are not internal; categories: those present.
#   A function of the type and the field list only, so computed once per event shape in
#   a batch.
# custom:
#   rule: R1
_event_shape(type, fields) := {
	"classified": classified,
	"releasable": object.remove(classified, internal_fields),
	"internal": internal_fields,
	"unclassified": names - object.keys(classified),
	"categories": {cat | some cat in classified},
} if {
	names := {field | some field in fields; is_string(field)}
	classified := object.filter(data.accord.classification.event_types[type], names)
	internal_fields := object.keys(classified) & sensitivity.internal_fields
}

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
	"flags": [],
	"policy_revision": policy_revision,
	"valid_until": null,
}

# METADATA
# title: Field-by-field decision for a well-formed item
# description: >-
#   Facts about the item (eligibility, consents, legal bases) are gathered once. What does
#   not depend on the field is judged once per category present in the event, with set
#   operations: the bars (R7 never-shared categories, R11, R10), then the consent side of
#   the categories that pass them. Each field is then judged by lookups: released on
#   consent or a legal basis, or withheld by the rules of its category (R1 unclassified,
#   R7 internal).
judgement(item) := _judged(item).decision

# METADATA
# title: A well-formed item's decision, and what each released field rests on
# description: >-
#   decision: the decision (judgement). field_reasons: released field → the rules that
#   allowed it; field_consents: field released on consent → the consents (id, version)
#   that released it. Every part of the decision is a union over the fields, each field
#   judged apart from the others, so these parts let a plan (below) be restricted to any
#   of its fields.
_judged(item) := {
	"decision": _decision(known, event, side, fields, item),
	"field_reasons": {field: sort(allowing_rules(known, event.classified[field], basis)) |
		some field, basis in fields.released
	},
	"field_consents": {field: sort(side.consents[event.classified[field]]) |
		some field, "consent" in fields.released
	},
} if {
	event := _event_shape(item.event.type, item.event.fields)
	known := facts(item)
	gates := _bars(known, event.categories)
	side := _consent_side(known, gates.open)
	fields := _fields_judged(event, known, gates, side)
}

_decision(known, event, side, fields, item) := {
	"allow": count(fields.released) > 0,
	"fields": sort(object.keys(fields.released)),
	"withheld": _withheld_in_field_order(fields.withheld),
	"field_basis": fields.released,
	"basis": sort(fields.bases),
	"reasons": _reasons_named(known, event, fields),
	"consents": _consents_relied_on(event, side, fields.released),
	"obligations": obligations(event.classified, fields.released),
	"review_required": needs_review(fields.bases, known.age_unknown_report),
	"flags": flags(known),
	"policy_revision": policy_revision,
	"valid_until": validity.valid_until(item),
}

# METADATA
# title: Plans for input.items, one per item, in the same order (R13, decision reuse)
# description: >-
#   An item's plan is its decision for every field its event type classifies besides its
#   own fields, with field_reasons and field_consents (see _judged): the relay restricts it
#   to the fields of any event of the same sharing state (services/broker/pipeline/reuse.py),
#   which gives this policy's decision for that event, as the reuse test proves.
# entrypoint: true
# schemas:
#   - input: schema.input
# custom:
#   rule: R13
plans := [plan(item) | some item in input.items]

# METADATA
# title: The plan of one item
plan(item) := _plan(_widened(item))

_plan(item) := object.union(j.decision, {"field_reasons": j.field_reasons, "field_consents": j.field_consents}) if {
	validation.well_formed(item)
	not sensitivity.internal_event_type(item)
	j := _judged(item)
} else := object.union(decide(item), {"field_reasons": {}, "field_consents": {}})

# METADATA
# title: The item with its event's fields and every field its type classifies
_widened(item) := object.union(item, {"event": {"fields": sort(names)}}) if {
	validation.fields_listed(item.event)
	names := {field | some field in item.event.fields} | object.keys(object.get(data.accord.classification.event_types, item.event.type, {}))
} else := item

# METADATA
# title: Each releasable field released on a legal basis or consent, every other field withheld
# description: >-
#   released: field → basis ("consent" wins over a legal basis for the same field);
#   withheld: field → the rules that withhold it; bases: the bases used.
_fields_judged(event, known, gates, side) := {"released": released, "withheld": withheld, "bases": bases} if {
	legal := {field: basis | some field, basis in legal_bases(known); event.releasable[field] in gates.open}
	released := object.union(legal, {field: "consent" | some field, cat in event.releasable; side.consents[cat]})
	withheld := _withheld_by_rule(event, object.union(gates.rules, side.rules), object.keys(legal))
	bases := {basis | some basis in released}
}

# METADATA
# title: The rules that withhold each field not released on a legal basis
# description: R1 for unclassified fields, R7 for internal ones, else the rules of its category.
_withheld_by_rule(event, by_category, legally_released) := object.union(
	object.union(
		{field: {"R1"} | some field in event.unclassified},
		{field: {"R7"} | some field in event.internal},
	),
	object.remove({field: by_category[cat] | some field, cat in event.releasable}, legally_released),
)

# METADATA
# title: Withheld fields with their rules, in field order
# description: >-
#   In field order by construction, not by the engine's object iteration (the server and
#   the in-process WebAssembly engine must answer byte for byte alike).
_withheld_in_field_order(withheld) := [{"field": field, "rules": sort(withheld[field])} |
	some field in sort(object.keys(withheld))
]

# METADATA
# title: Every rule that allowed a released field or withheld another
# custom:
#   rule: R13
_reasons_named(known, event, fields) := sort(allowing | denying) if {
	pairs := {[event.classified[field], basis] | some field, basis in fields.released}
	allowing := {rule | some [cat, basis] in pairs; some rule in allowing_rules(known, cat, basis)}
	denying := union({rules | some rules in fields.withheld})
}

# METADATA
# title: The consents (id, version) that released a field
_consents_relied_on(event, side, released) := sort(union({side.consents[cat] | some cat in by_consent})) if {
	by_consent := {event.classified[field] | some field, "consent" in released}
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
	"age_unknown_report": reporting.age_unknown_report(item),
	"emergency_fields": legal_basis.emergency_fields(item),
	"court_order_fields": legal_basis.court_order_fields(item),
}

# METADATA
# title: What withholds the categories of the event before consent and legal bases are asked
# description: >-
#   rules: category → rule ids for the categories that nothing may release: R7 (never
#   shared), else R11 (inactive or unvetted partner) or R10 (barred for this recipient).
#   open: the other categories.
_bars(known, categories) := {
	"rules": object.union({cat: {"R7"} | some cat in never}, barred),
	"open": (categories - never) - object.keys(barred),
} if {
	never := categories & sensitivity.never_shared_categories
	barred := _recipient_bars(known, categories - never)
}

_recipient_bars(known, categories) := {cat: {"R11"} | some cat in categories} if {
	known.admitted == false
} else := {cat: {"R10"} | some cat in (categories & known.barred_categories)}

# METADATA
# title: The consent side of the open categories
# description: >-
#   consents: category → the consents (id, version) that release it, for the categories
#   released by consent; only categories an agreement covers (R11) that the recipient needs
#   to know (R6) may be. rules: category → every rule that withholds it on the consent side
#   (R2, R3, R4, R5, R6, R10, R11; R2 if none more specific applies) for the others.
# custom:
#   rule: R2
_consent_side(known, categories) := {
	"consents": permitted,
	"rules": object.union({cat: {"R2"} | some cat in failing}, rules),
} if {
	agreed := categories & known.consent_categories
	eligible := agreed & known.needed_categories
	permitted := {cat: consents |
		some cat, consents in consent.permitting(
			known.consent,
			eligible,
		)
		count(consents) > 0
	}
	failing := categories - object.keys(permitted)
	by_rule := object.union(consent.failures(known.consent, failing), {
		"R11": failing - known.consent_categories,
		"R6": failing - known.needed_categories,
	})
	applying := {rule: withheld | some rule, withheld in by_rule; count(withheld) > 0}
	rules := {cat: found |
		some cat in failing
		found := {rule | some rule, withheld in applying; cat in withheld}
		count(found) > 0
	}
}

# METADATA
# title: Fields released on a legal basis, each by the first that applies
# description: Mandated reporting (R5) before imminent danger (R8) before a court order (R9).
legal_bases(known) := object.union(
	object.union(
		{field: "court_order" | some field in known.court_order_fields},
		{field: "imminent_danger" | some field in known.emergency_fields},
	),
	{field: "mandated_reporting" | some field in known.mandated_fields},
)

# METADATA
# title: Rule ids that allowed a released field
allowing_rules(known, cat, "consent") := ({"R2"} | sensitive) | named if {
	sensitive := {"R10" | sensitivity.sensitive(cat)}
	named := {"R4" | known.consent.named_consent_required}
}

allowing_rules(_, _, "mandated_reporting") := {"R5"}

allowing_rules(_, _, "imminent_danger") := {"R8"}

allowing_rules(_, _, "court_order") := {"R9"}

# METADATA
# title: Obligations on the recipient
# custom:
#   rule: R10
obligations(classified, released) := [{"kind": "redisclosure_notice", "rule": "R10", "fields": fields}] if {
	fields := sort({field | some field, _ in released; classified[field] in sensitivity.redisclosure_notice_categories})
	count(fields) > 0
} else := []

# METADATA
# title: Imminent-danger and court-order releases are reviewed by compliance
# description: So is a decision flagged age_unknown (R5).
# custom:
#   rule: R8
needs_review(bases, age_unknown_report) if {
	some basis in bases
	basis in {"imminent_danger", "court_order"}
} else := age_unknown_report

# METADATA
# title: What a reviewer should know of the decision
# description: >-
#   age_unknown - the survivor's age is unknown, and this partner would have received a
#   minor's mandated report.
# custom:
#   rule: R5
flags(known) := ["age_unknown"] if known.age_unknown_report == true

else := []
