# METADATA
# title: Well-formed input (R1)
# description: >-
#   An item that fails any of these checks is denied as a whole: unknown event type,
#   partner type, purpose or jurisdiction, unparseable `now`, fields that are not a list
#   of strings, an age that is neither null nor a non-negative number, or lists that are
#   not lists.
package accord.validation

import data.accord.clock
import data.accord.jurisdiction
import data.accord.reporting

# METADATA
# title: The item can be judged
# custom:
#   rule: R1
well_formed(item) if {
	is_object(item)
	is_number(clock.now_ns(item))
	item.purpose in data.accord.vocabulary.purposes
	known_event_type(item.event)
	fields_listed(item.event)
	jurisdiction.known(item.event.agency.jurisdiction)
	age_valid(item)
	known_partner(item.partner)
	every key in ["consents", "declarations", "court_orders"] {
		list_or_absent(item, key)
	}
}

known_event_type(event) if event.type in event_types

# METADATA
# title: The event types of the classification (built once per query)
event_types := object.keys(data.accord.classification.event_types)

fields_listed(event) if {
	is_array(event.fields)
	every field in event.fields {
		is_string(field)
	}
}

age_valid(item) if valid_age(reporting.age(item))

valid_age(age) if age == null

valid_age(age) if {
	is_number(age)
	age >= 0
}

known_partner(partner) if {
	is_string(partner.id)
	partner.type in data.accord.vocabulary.partner_types
}

list_or_absent(item, key) if is_array(object.get(item, key, []))
