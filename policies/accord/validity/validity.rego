# METADATA
# title: How long a decision stays true (R13)
# description: >-
#   A decision is a pure function of its input (R13), and the only part of the input that
#   moves by itself is `now`. Every time comparison of the policy is of the form
#   `t <= now`, `t > now` or `now < t` for a time t of the input (a consent period's start
#   or end, an agreement's start or end, a training attestation's end, an imminent-danger
#   declaration's start, end or lapse after the jurisdiction's hours, a court order's
#   expiry), so each comparison keeps its answer from `now` until the first such t after
#   `now`. `valid_until` is that instant, in nanoseconds since the epoch (null: no time of
#   the input lies ahead), so the relay may reuse the decision for the same input with any
#   `now` in [now, valid_until) and never guesses. Times that a comparison does not
#   reach for this partner are included too: that only shortens the reuse.
package accord.validity

import data.accord.clock
import data.accord.jurisdiction
import data.accord.legal_basis

# METADATA
# title: The first instant after now at which the decision could change, or null
# custom:
#   rule: R13
valid_until(item) := min(ahead) if {
	now := clock.now_ns(item)
	ahead := {t | some t in compared_times(item); t > now}
	count(ahead) > 0
} else := null

# METADATA
# title: Every time of the item that the policy compares with now
# custom:
#   rule: R13
compared_times(item) := ((consent_times(object.get(item, "consents", [])) | partner_times(item.partner)) | declaration_times(object.get(item, "declarations", []), jurisdiction.of(item))) | order_times(object.get(item, "court_orders", []))

# METADATA
# title: Starts and ends of every consent provision (R2, R3)
# custom:
#   rule: R3
consent_times(consents) := {t |
	some consent in consents
	some provision in consent.provisions
	some end in ["start", "end"]
	t := clock.at(provision.period[end])
}

# METADATA
# title: Agreement periods and the training attestation's end (R11)
# custom:
#   rule: R11
partner_times(partner) := {t | some agreement in partner.agreements; some end in ["valid_from", "valid_until"]; t := clock.at(agreement[end])} | {t | t := clock.at(partner.training_attested_until)}

# METADATA
# title: When an imminent-danger declaration starts, is ended, or lapses after the jurisdiction's hours (R8)
# custom:
#   rule: R8
declaration_times(declarations, jurisdiction_id) := ({t | some declaration in declarations; t := clock.at(declaration.declared_at)} | {t | some declaration in declarations; t := clock.at(declaration.ended_at)}) | {t |
	some declaration in declarations
	t := clock.at(declaration.declared_at) + (jurisdiction.settings(jurisdiction_id).imminent_danger.hours * legal_basis.hour_ns)
}

# METADATA
# title: When each court order expires (R9)
# custom:
#   rule: R9
order_times(orders) := {t | some order in orders; t := clock.at(order.expires_at)}
