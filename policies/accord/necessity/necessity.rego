# METADATA
# title: Minimum necessary (R6)
# description: >-
#   The need-to-know matrix (partner type × purpose → categories) of the event's
#   jurisdiction. A missing cell means no need to know anything.
package accord.necessity

import data.accord.jurisdiction

# METADATA
# title: The partner type needs this category for the purpose
# custom:
#   rule: R6
needs_to_know(item, category) if category in needed_categories(item)

# METADATA
# title: Categories the partner type needs for the purpose (empty if no cell)
# custom:
#   rule: R6
needed_categories(item) := needed_for(jurisdiction.of(item), item.partner.type, item.purpose)

needed_for(jurisdiction_id, partner_type, purpose) := {category |
	some category in jurisdiction.settings(jurisdiction_id).need_to_know[partner_type][purpose]
}
