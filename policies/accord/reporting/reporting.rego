# METADATA
# title: Reporting by age (R4 adults, R5 minors)
# description: >-
#   A survivor is a minor only if the item carries a numeric age below the jurisdiction's
#   age of majority. A missing or null age (the event gave neither `age` nor
#   `date_of_birth`) may be either: it gets the stricter side of both. R4's protections
#   apply (no restricted recipient without named consent) and R5 releases nothing (no one
#   is reported without a basis), but a decision for a partner that would have received the
#   mandated report of a minor is flagged `age_unknown` and goes to compliance review, so a
#   child whose age was not recorded is not silently left unreported. The functions of an
#   item delegate to functions of the age, the jurisdiction and the partner only, so a
#   batch computes them once per kind of case.
package accord.reporting

import data.accord.jurisdiction

# METADATA
# title: The survivor's age at event time, or null if unknown
age(item) := object.get(item, ["event", "survivor", "age"], null)

# METADATA
# title: The survivor is under the jurisdiction's age of majority
# custom:
#   rule: R5
minor(item) if minor_in(age(item), jurisdiction.of(item))

minor_in(age, jurisdiction_id) if {
	is_number(age)
	age < jurisdiction.settings(jurisdiction_id).age_of_majority
}

# METADATA
# title: Law enforcement, prosecution, court or immigration enforcement
# custom:
#   rule: R4
restricted_recipient(partner, jurisdiction_id) if {
	partner.type in jurisdiction.settings(jurisdiction_id).adult_restricted_partner_types
}

restricted_recipient(partner, _) if partner.immigration_enforcement == true

# METADATA
# title: Consent must name this recipient explicitly (by id or type, not "*")
# custom:
#   rule: R4
needs_named_consent(item) if named_consent_needed(item.partner, age(item), jurisdiction.of(item))

named_consent_needed(partner, age, jurisdiction_id) if {
	restricted_recipient(partner, jurisdiction_id)
	not minor_in(age, jurisdiction_id)
}

named_consent_required(item) if needs_named_consent(item)

else := false

# METADATA
# title: The partner receives mandated reports about minors in this jurisdiction
# description: >-
#   If the item carries partner.jurisdiction, it must be the event's jurisdiction.
# custom:
#   rule: R5
mandated_report_recipient(partner, age, jurisdiction_id) if {
	minor_in(age, jurisdiction_id)
	reports_go_to(partner, jurisdiction_id)
}

# METADATA
# title: The partner is a mandated-report recipient of the jurisdiction (whatever the age)
# custom:
#   rule: R5
reports_go_to(partner, jurisdiction_id) if {
	partner.type in jurisdiction.settings(jurisdiction_id).mandated_report.recipients
	partner_in_event_jurisdiction(partner, jurisdiction_id)
}

partner_in_event_jurisdiction(partner, _) if not partner.jurisdiction

partner_in_event_jurisdiction(partner, jurisdiction_id) if partner.jurisdiction == jurisdiction_id

# METADATA
# title: The field is in the mandated-report field set and goes to this partner
# custom:
#   rule: R5
mandated_report_releases(item, field) if field in mandated_fields(item)

# METADATA
# title: Fields this partner receives as a mandated report (empty if none)
# custom:
#   rule: R5
mandated_fields(item) := mandated_fields_for(item.partner, age(item), jurisdiction.of(item))

mandated_fields_for(partner, age, jurisdiction_id) := {field |
	mandated_report_recipient(partner, age, jurisdiction_id)
	some field in jurisdiction.settings(jurisdiction_id).mandated_report.fields
}

# METADATA
# title: The age is unknown and this partner would receive a minor's mandated report
# description: >-
#   Flags the decision `age_unknown` and requires review; nothing more is released.
# custom:
#   rule: R5
age_unknown_report(item) if unknown_age_report(item.partner, age(item), jurisdiction.of(item))

else := false

unknown_age_report(partner, null, jurisdiction_id) if reports_go_to(partner, jurisdiction_id)
