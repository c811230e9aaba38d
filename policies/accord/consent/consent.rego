# METADATA
# title: Consent scope (R2), revocation and expiry (R3), suspect guardians (R5), explicit sensitive consent (R10)
# description: >-
#   A consent counts if its status is "active" and it was not recorded by a suspect
#   guardian (a guardian's consent counts only with `suspect: false`). A permit provision
#   applies within its period [start, end) judged at the item's `now`; a deny provision
#   applies unless its period has clearly not started or has ended (a malformed period
#   denies). "*" in recipients.partner_types or purposes means any. "*" in a permit's
#   categories means every non-sensitive category (R10); in a deny's, every category.
#   `view(item)` gathers the provisions about this partner and purpose once per item;
#   the per-category functions take that view.
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
# title: Provisions of a type about this partner and purpose, with their consent
about_this_partner(item, type) := [[consent, provision] |
	some consent in item.consents
	some provision in consent.provisions
	provision.type == type
	recipient_matches(item, provision)
	purpose_matches(item, provision)
]

# METADATA
# title: What the survivor's consents say to this partner for this purpose
# description: >-
#   live: permits in force of counting consents, with the consent (id, version) and
#   whether they name the partner. lapsed / suspect: categories of permits that would
#   apply but for R3 / R5. denies: categories of denies in force.
view(item) := {
	"live": {{"consent": {"id": consent.id, "version": consent.version}, "categories": provision.categories, "named": named(item, provision)} |
		some [consent, provision] in permits
		counts(consent)
		permit_in_force(provision, now)
	},
	"lapsed": {provision.categories |
		some [consent, provision] in permits
		not recorded_by_suspect(consent)
		not live(consent, provision, now)
	},
	"suspect": {provision.categories |
		some [consent, provision] in permits
		recorded_by_suspect(consent)
	},
	"denies": {provision.categories |
		some [consent, provision] in about_this_partner(item, "deny")
		counts(consent)
		deny_in_force(provision, now)
	},
	"named_consent_required": reporting.named_consent_required(item),
} if {
	now := clock.now_ns(item)
	permits := about_this_partner(item, "permit")
}

live(consent, provision, now) if {
	counts(consent)
	permit_in_force(provision, now)
}

named(item, provision) if names_recipient(item, provision)

else := false

# METADATA
# title: The categories mention this one, by name or by "*"
# custom:
#   rule: R2
mentions(categories, category) if category in categories

mentions(categories, _) if "*" in categories

# METADATA
# title: Permitted categories cover this one under R10 ("*" is not enough for a sensitive one)
# custom:
#   rule: R10
covers(categories, category) if category in categories

covers(categories, category) if {
	"*" in categories
	not sensitivity.sensitive(category)
}

# METADATA
# title: A deny in force covers the category
# custom:
#   rule: R2
denied(view, category) if {
	some categories in view.denies
	mentions(categories, category)
}

# METADATA
# title: A live permit may reach this recipient under R4
# custom:
#   rule: R4
reaches(view, _) if view.named_consent_required == false

reaches(_, permit) if permit.named == true

# METADATA
# title: Consents (id, version) with a provision that alone permits the category (R2, R4, R10)
# custom:
#   rule: R2
permitting(view, category) := {permit.consent |
	not denied(view, category)
	some permit in view.live
	covers(permit.categories, category)
	reaches(view, permit)
}

# METADATA
# title: Consent-side rules that withhold the category
# description: R3 and R5 explain a permit that would apply if its consent were live.
failures(view, category) := ((({"R2" | not permitted_ignoring_r4_r10(view, category)} | {"R10" | not sensitive_covered(view, category)}) | {"R4" | not recipient_reached(view, category)}) | {"R3" | lapsed_permit(view, category)}) | {"R5" | suspect_permit(view, category)}

permitted_ignoring_r4_r10(view, category) if {
	some permit in view.live
	mentions(permit.categories, category)
	not denied(view, category)
}

sensitive_covered(_, category) if not sensitivity.sensitive(category)

sensitive_covered(view, category) if {
	some permit in view.live
	category in permit.categories
}

recipient_reached(view, _) if view.named_consent_required == false

recipient_reached(view, category) if {
	some permit in view.live
	permit.named == true
	covers(permit.categories, category)
}

# METADATA
# title: A permit would apply but its consent is revoked or expired, or its period is over
# custom:
#   rule: R3
lapsed_permit(view, category) if {
	some categories in view.lapsed
	mentions(categories, category)
}

# METADATA
# title: A permit would apply but was recorded by a suspect guardian
# custom:
#   rule: R5
suspect_permit(view, category) if {
	some categories in view.suspect
	mentions(categories, category)
}
