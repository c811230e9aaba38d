# METADATA
# title: Referral deadlines (R12)
# description: >-
#   How long a partner has to acknowledge a referral, and to accept or decline it, counted from
#   its delivery in the partner's coverage hours; when an unanswered referral expires; and
#   whether a breach proposes the next eligible partner of the same type. Per jurisdiction
#   (data.accord.jurisdictions, `referral_deadlines`) and partner type (`by_partner_type`).
package accord.deadlines

import data.accord.jurisdiction

# METADATA
# title: The deadlines of a referral to a partner type in a jurisdiction
# description: >-
#   input: {"jurisdiction": id, "partner_type": type}. A jurisdiction Accord has no rules for
#   gets the defaults: no referral is ever without a deadline.
# entrypoint: true
# custom:
#   rule: R12
deadlines := object.remove(
	object.union(terms, object.get(terms.by_partner_type, input.partner_type, {})),
	["by_partner_type"],
) if {
	terms := _terms_of(input.jurisdiction)
}

_terms_of(id) := jurisdiction.settings(id).referral_deadlines if jurisdiction.known(id)

else := data.accord.jurisdictions.default.referral_deadlines
