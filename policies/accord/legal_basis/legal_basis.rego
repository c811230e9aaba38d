# METADATA
# title: Legal bases without consent (R8 imminent danger, R9 court order)
# description: >-
#   Each releases exactly its configured or named fields (not intersected with need-to-know);
#   R7 and R10's bars and R11's active-and-vetted gate still apply (in accord.decision).
package accord.legal_basis

import data.accord.clock
import data.accord.jurisdiction

hour_ns := 3600000000000

# METADATA
# title: The publishing agency declared imminent danger, within the jurisdiction's duration
# custom:
#   rule: R8
imminent_danger_declared(item) if {
	now := clock.now_ns(item)
	some declaration in item.declarations
	declaration.kind == "imminent_danger"
	declaration.agency == item.event.agency.id
	declared := clock.at(declaration.declared_at)
	declared <= now
	now < declared + (jurisdiction.config(item).imminent_danger.hours * hour_ns)
	clock.not_ended(object.get(declaration, "ended_at", null), now)
}

# METADATA
# title: The field is in the emergency set and the partner is an emergency recipient
# custom:
#   rule: R8
emergency_releases(item, field) if field in emergency_fields(item)

# METADATA
# title: Fields released under an imminent-danger declaration (empty if none)
# custom:
#   rule: R8
emergency_fields(item) := {field |
	settings := jurisdiction.config(item).imminent_danger
	item.partner.type in settings.recipients
	imminent_danger_declared(item)
	some field in settings.fields
}

# METADATA
# title: An unexpired court order names this partner and this field
# custom:
#   rule: R9
court_order_releases(item, field) if field in court_order_fields(item)

# METADATA
# title: Fields named by unexpired court orders for this partner (empty if none)
# custom:
#   rule: R9
court_order_fields(item) := {field |
	now := clock.now_ns(item)
	some order in item.court_orders
	order.recipient == item.partner.id
	is_string(order.reference)
	is_string(order.court)
	now < clock.at(order.expires_at)
	some field in order.fields
	is_string(field)
}
