# METADATA
# title: Partner eligibility (R11)
# description: >-
#   An inactive or unvetted partner receives nothing on any basis. Consent-based sharing
#   further needs an agreement (MOU) in force at `now` that lists the purpose and the
#   field's category, and (if the jurisdiction requires it, default yes) a training
#   attestation valid after `now`. Legal bases (R5, R8, R9) do not depend on the MOU or
#   training: the law, a declaration or a court order is the basis.
#   The functions of an item delegate to functions of the partner, purpose, time and
#   jurisdiction only, so a batch computes them once per partner.
package accord.eligibility

import data.accord.clock
import data.accord.jurisdiction

# METADATA
# title: The partner is active and vetted
# custom:
#   rule: R11
partner_admitted(item) if admitted_partner(item.partner)

admitted_partner(partner) if {
	partner.status == "active"
	partner.vetted == true
}

# METADATA
# title: Categories covered, for this purpose, by an agreement in force
# custom:
#   rule: R11
agreement_categories(partner, purpose, now) := {category |
	some agreement in partner.agreements
	agreement_in_force(agreement, now)
	purpose in agreement.purposes
	some category in agreement.categories
}

agreement_in_force(agreement, now) if {
	clock.at(agreement.valid_from) <= now
	now < clock.at(agreement.valid_until)
}

# METADATA
# title: Training is attested until after now, or not required here
# custom:
#   rule: R11
training_current(_, jurisdiction_id, _) if jurisdiction.settings(jurisdiction_id).training_required == false

training_current(partner, _, now) if now < clock.at(partner.training_attested_until)

# METADATA
# title: The partner may receive this category on the basis of consent
# custom:
#   rule: R11
may_receive_by_consent(item, category) if category in consent_categories(item)

# METADATA
# title: Categories the partner may receive on the basis of consent (empty if none)
# custom:
#   rule: R11
consent_categories(item) := partner_consent_categories(
	item.partner,
	item.purpose,
	jurisdiction.of(item),
	clock.now_ns(item),
)

partner_consent_categories(partner, purpose, jurisdiction_id, now) := agreement_categories(partner, purpose, now) if {
	admitted_partner(partner)
	training_current(partner, jurisdiction_id, now)
} else := set()

# METADATA
# title: partner_admitted as a boolean
admitted(item) if partner_admitted(item)

else := false
