# METADATA
# title: Consent scope (R2), revocation and expiry (R3), suspect guardians (R5), explicit sensitive consent (R10)
# description: >-
#   A consent counts if its status is "active" and it was not recorded by a guardian
#   (a guardian's consent counts only with `suspect: false`). A permit provision applies
#   within its period [start, end) judged at the item's `now`; a deny provision applies
#   unless its period has clearly not started or has ended (a malformed period denies).
#   "*" in recipients.partner_types or purposes means any. "*" in a permit's categories
#   means every non-sensitive category (R10); in a deny's categories it means every category.
package accord.consent

import data.accord.clock
import data.accord.reporting
import data.accord.sensitivity

# METADATA
# title: The consent is in effect and was not recorded by a suspect
# custom:
#   rule: R3
counts(consent) if {
	consent.status == "active"
	not recorded_by_suspect(consent)
}

# METADATA
# title: Recorded by a guardian not cleared as a non-suspect
# custom:
#   rule: R5
recorded_by_suspect(consent) if {
	consent.recorded_by.role == "guardian"
	not consent.recorded_by.suspect == false
}

# METADATA
# title: The permit applies at this time
# custom:
#   rule: R3
permit_in_force(provision, now) if {
	clock.at(provision.period.start) <= now
	clock.not_ended(object.get(provision.period, "end", null), now)
}

# METADATA
# title: The deny applies unless its period has clearly not started or has ended
# custom:
#   rule: R2
deny_in_force(provision, now) if {
	not starts_after(provision, now)
	not ended_before(provision, now)
}

starts_after(provision, now) if clock.at(provision.period.start) > now

ended_before(provision, now) if clock.at(provision.period.end) <= now

# METADATA
# title: The provision names this partner, by id or by type
# custom:
#   rule: R4
names_recipient(item, provision) if item.partner.id in provision.recipients.partners

names_recipient(item, provision) if item.partner.type in provision.recipients.partner_types

# METADATA
# title: The provision is about this partner
# custom:
#   rule: R2
recipient_matches(item, provision) if names_recipient(item, provision)

recipient_matches(_, provision) if "*" in provision.recipients.partner_types

# METADATA
# title: The provision is about this purpose
# custom:
#   rule: R2
purpose_matches(item, provision) if item.purpose in provision.purposes

purpose_matches(_, provision) if "*" in provision.purposes

# METADATA
# title: The provision mentions the category, by name or by "*"
# custom:
#   rule: R2
mentions_category(provision, category) if category in provision.categories

mentions_category(provision, _) if "*" in provision.categories

# METADATA
# title: A permit that covers the category under R10 ("*" is not enough for a sensitive one)
# custom:
#   rule: R10
covers_category(provision, category) if category in provision.categories

covers_category(provision, category) if {
	"*" in provision.categories
	not sensitivity.sensitive(category)
}

# METADATA
# title: A permit that may reach this recipient under R4
# custom:
#   rule: R4
reaches_recipient(item, _) if not reporting.needs_named_consent(item)

reaches_recipient(item, provision) if names_recipient(item, provision)

# METADATA
# title: Permit provisions about this partner, purpose and category, whatever their state
matching_permits(item, category) := {[consent, provision] |
	some consent in item.consents
	some provision in consent.provisions
	provision.type == "permit"
	recipient_matches(item, provision)
	purpose_matches(item, provision)
	mentions_category(provision, category)
}

# METADATA
# title: Matching permits of counting consents, in force now
# custom:
#   rule: R2
live_permits(item, category) := {[consent, provision] |
	some [consent, provision] in matching_permits(item, category)
	counts(consent)
	permit_in_force(provision, clock.now_ns(item))
}

# METADATA
# title: A counting deny provision covers this partner, purpose and category
# custom:
#   rule: R2
denied(item, category) if {
	some consent in item.consents
	counts(consent)
	some provision in consent.provisions
	provision.type == "deny"
	deny_in_force(provision, clock.now_ns(item))
	recipient_matches(item, provision)
	purpose_matches(item, provision)
	mentions_category(provision, category)
}

# METADATA
# title: Consents (id, version) with a provision that alone permits the category (R2, R4, R10)
# custom:
#   rule: R2
permitting(item, category) := {{"id": consent.id, "version": consent.version} |
	not denied(item, category)
	some [consent, provision] in live_permits(item, category)
	covers_category(provision, category)
	reaches_recipient(item, provision)
}

# METADATA
# title: Consent-side rules that withhold the category
# description: R3 and R5 explain a permit that would apply if its consent were live.
failures(item, category) := ((({"R2" | not permitted_ignoring_r4_r10(item, category)} | {"R10" | not sensitive_covered(item, category)}) | {"R4" | not recipient_reached(item, category)}) | {"R3" | lapsed_permit(item, category)}) | {"R5" | suspect_permit(item, category)}

permitted_ignoring_r4_r10(item, category) if {
	count(live_permits(item, category)) > 0
	not denied(item, category)
}

sensitive_covered(_, category) if not sensitivity.sensitive(category)

sensitive_covered(item, category) if {
	some [_, provision] in live_permits(item, category)
	category in provision.categories
}

recipient_reached(item, _) if not reporting.needs_named_consent(item)

recipient_reached(item, category) if {
	some [_, provision] in live_permits(item, category)
	names_recipient(item, provision)
	covers_category(provision, category)
}

# METADATA
# title: A permit would apply but its consent is revoked or expired, or the period is over
# custom:
#   rule: R3
lapsed_permit(item, category) if {
	some [consent, provision] in matching_permits(item, category)
	not recorded_by_suspect(consent)
	not [consent, provision] in live_permits(item, category)
}

# METADATA
# title: A permit would apply but was recorded by a suspect guardian
# custom:
#   rule: R5
suspect_permit(item, category) if {
	some [consent, _] in matching_permits(item, category)
	recorded_by_suspect(consent)
}
