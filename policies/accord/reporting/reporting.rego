# METADATA
# title: Reporting by age (R4 adults, R5 minors)
# description: >-
#   A survivor is a minor only if the item carries a numeric age below the jurisdiction's
#   age of majority. A missing or null age is not a minor: R5 does not trigger and R4's
#   protections apply.
package accord.reporting

import data.accord.jurisdiction

# METADATA
# title: The survivor's age at event time, or null if unknown
age(item) := object.get(item, ["event", "survivor", "age"], null)

# METADATA
# title: The survivor is under the jurisdiction's age of majority
# custom:
#   rule: R5
minor(item) if {
	is_number(age(item))
	age(item) < jurisdiction.config(item).age_of_majority
}

# METADATA
# title: Law enforcement, prosecution, court or immigration enforcement
# custom:
#   rule: R4
restricted_recipient(item) if item.partner.type in jurisdiction.config(item).adult_restricted_partner_types

restricted_recipient(item) if item.partner.immigration_enforcement == true

# METADATA
# title: Consent must name this recipient explicitly (by id or type, not "*")
# custom:
#   rule: R4
needs_named_consent(item) if {
	restricted_recipient(item)
	not minor(item)
}

named_consent_required(item) if needs_named_consent(item)

else := false

# METADATA
# title: The partner receives mandated reports about minors in this jurisdiction
# description: >-
#   If the item carries partner.jurisdiction, it must be the event's jurisdiction.
# custom:
#   rule: R5
mandated_report_recipient(item) if {
	minor(item)
	item.partner.type in jurisdiction.config(item).mandated_report.recipients
	partner_in_event_jurisdiction(item)
}

partner_in_event_jurisdiction(item) if not item.partner.jurisdiction

partner_in_event_jurisdiction(item) if item.partner.jurisdiction == item.event.agency.jurisdiction

# METADATA
# title: The field is in the mandated-report field set and goes to this partner
# custom:
#   rule: R5
mandated_report_releases(item, field) if field in mandated_fields(item)

# METADATA
# title: Fields this partner receives as a mandated report (empty if none)
# custom:
#   rule: R5
mandated_fields(item) := {field |
	mandated_report_recipient(item)
	some field in jurisdiction.config(item).mandated_report.fields
}
