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
names_recipient(partner, provision) if partner.id in provision.recipients.partners

names_recipient(partner, provision) if partner.type in provision.recipients.partner_types

# METADATA
# title: The provision is about this partner
# custom:
#   rule: R2
recipient_matches(partner, provision) if names_recipient(partner, provision)

recipient_matches(_, provision) if "*" in provision.recipients.partner_types

# METADATA
# title: The provision is about this purpose
# custom:
#   rule: R2
purpose_matches(purpose, provision) if purpose in provision.purposes

purpose_matches(_, provision) if "*" in provision.purposes

# METADATA
# title: Provisions of a type about this partner and purpose, with their consent
# description: A function of the consents, partner and purpose only (cached across a batch).
about_this_partner(consents, partner, purpose, type) := [[consent, provision] |
	some consent in consents
	some provision in consent.provisions
	provision.type == type
	recipient_matches(partner, provision)
	purpose_matches(purpose, provision)
]

# METADATA
# title: What the survivor's consents say to this partner for this purpose
# description: >-
#   live: permits in force of counting consents, with the consent (id, version) and
#   whether they name the partner. lapsed / suspect: categories of permits that would
#   apply but for R3 / R5. denies: categories of denies in force.
view(item) := {
	"live": {{
		"consent": {"id": consent.id, "version": consent.version},
		"categories": provision.categories,
		"named": named(item.partner, provision),
	} |
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
		some [consent, provision] in about_this_partner(consents, item.partner, item.purpose, "deny")
		counts(consent)
		deny_in_force(provision, now)
	},
	"named_consent_required": reporting.named_consent_required(item),
} if {
	now := clock.now_ns(item)
	consents := object.get(item, "consents", [])
	permits := about_this_partner(consents, item.partner, item.purpose, "permit")
}

live(consent, provision, now) if {
	counts(consent)
	permit_in_force(provision, now)
}

named(partner, provision) if names_recipient(partner, provision)

else := false

# METADATA
# title: Of some categories, those a set of category lists mentions, by name or by "*"
# custom:
#   rule: R2
mentioned(lists, categories) := categories if {
	some list in lists
	"*" in list
} else := named_in(lists, categories)

# METADATA
# title: Of some categories, those a set of category lists names explicitly
named_in(lists, categories) := {category |
	some list in lists
	some category in list
	category in categories
}

# METADATA
# title: Of some categories, those a set of permitted lists covers under R10
# description: A category named explicitly is covered; "*" covers every category that is not sensitive.
# custom:
#   rule: R10
covered(lists, categories) := named_in(lists, categories) | starred(lists, categories)

starred(lists, categories) := categories - sensitivity.sensitive_categories if {
	some list in lists
	"*" in list
} else := set()

# METADATA
# title: A deny in force covers the category
# custom:
#   rule: R2
denied(view, category) if category in mentioned(view.denies, {category})

# METADATA
# title: A live permit may reach this recipient under R4
# custom:
#   rule: R4
reaches(view, _) if view.named_consent_required == false

reaches(_, permit) if permit.named == true

# METADATA
# title: For each category, the consents (id, version) with a provision that alone permits it (R2, R4, R10)
# description: >-
#   A deny in force covers the category (R2), or else a live permit covers it (R10) and
#   reaches the recipient (R4).
# custom:
#   rule: R2
permitting(view, categories) := {category: consents |
	some category in categories
	consents := {consent | some [consent, covers] in grants; category in covers}
} if {
	undenied := categories - mentioned(view.denies, categories)
	grants := {[permit.consent, covered({permit.categories}, undenied)] |
		some permit in view.live
		reaches(view, permit)
	}
}

# METADATA
# title: For each consent-side rule, the categories (of some) that it withholds
# description: >-
#   R2: no live permit mentions it, or a deny does; R10: it is sensitive and no live permit
#   names it; R4: no live permit that names the recipient covers it, where R4 asks for one;
#   R3 and R5: a permit would apply if its consent were live (lapsed, or recorded by a
#   suspect guardian).
failures(view, categories) := {
	"R2": categories - (mentioned(live, categories) - mentioned(view.denies, categories)),
	"R10": (categories & sensitivity.sensitive_categories) - named_in(live, categories),
	"R4": categories - recipient_reached(view, categories),
	"R3": mentioned(view.lapsed, categories),
	"R5": mentioned(view.suspect, categories),
} if {
	live := {permit.categories | some permit in view.live}
}

# METADATA
# title: Of some categories, those a live permit may bring to this recipient under R4
# custom:
#   rule: R4
recipient_reached(view, categories) := categories if {
	view.named_consent_required == false
} else := covered({permit.categories | some permit in view.live; permit.named == true}, categories)
