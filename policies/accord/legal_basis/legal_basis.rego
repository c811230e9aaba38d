# METADATA
# title: Legal bases without consent (R8 imminent danger, R9 court order)
# description: >-
#   Each releases exactly its configured or named fields (not intersected with need-to-know);
#   R7 and R10's bars and R11's active-and-vetted gate still apply (in accord.decision).
#   The functions of an item delegate to functions of the declarations or orders, the
#   partner and the time only (cached across a batch).
package accord.legal_basis

import data.accord.clock
import data.accord.jurisdiction

hour_ns := 3600000000000

# METADATA
# title: The publishing agency declared imminent danger, within the jurisdiction's duration
# custom:
#   rule: R8
imminent_danger_declared(declarations, agency, jurisdiction_id, now) if {
	some declaration in declarations
	declaration.kind == "imminent_danger"
	declaration.agency == agency.id
	declared := clock.at(declaration.declared_at)
	declared <= now
	now < declared + (jurisdiction.settings(jurisdiction_id).imminent_danger.hours * hour_ns)
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
emergency_fields(item) := set() if {
	not item.declarations
} else := emergency_fields_for(
	item.declarations, item.event.agency, jurisdiction.of(item),
	item.partner.type, object.get(item.partner, "jurisdiction", null), clock.now_ns(item),
)

emergency_fields_for(declarations, agency, jurisdiction_id, partner_type, partner_jurisdiction, now) := {field |
	settings := jurisdiction.settings(jurisdiction_id).imminent_danger
	partner_type in settings.recipients
	emergency_jurisdiction(partner_jurisdiction, jurisdiction_id)
	imminent_danger_declared(declarations, agency, jurisdiction_id, now)
	some field in settings.fields
}

# METADATA
# title: The partner serves the event's jurisdiction, or a neighbouring one it names
# description: >-
#   A partner of another jurisdiction receives the emergency set only if the event's
#   jurisdiction lists that one in imminent_danger.neighbouring_jurisdictions. A partner
#   without a jurisdiction is of none: it receives nothing under R8.
# custom:
#   rule: R8
emergency_jurisdiction(partner_jurisdiction, jurisdiction_id) if partner_jurisdiction == jurisdiction_id

emergency_jurisdiction(partner_jurisdiction, jurisdiction_id) if {
	partner_jurisdiction in jurisdiction.settings(jurisdiction_id).imminent_danger.neighbouring_jurisdictions
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
court_order_fields(item) := set() if {
	not item.court_orders
} else := court_order_fields_for(item.court_orders, item.partner.id, clock.now_ns(item))

# An order is identified by its id: its reference and court are sealed at rest and never
# reach the policy (docs/at-rest.md); recording one requires both.
court_order_fields_for(orders, partner_id, now) := {field |
	some order in orders
	order.recipient == partner_id
	is_string(order.id)
	now < clock.at(order.expires_at)
	some field in order.fields
	is_string(field)
}
