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
needed_categories(item) := {category |
	some category in jurisdiction.config(item).need_to_know[item.partner.type][item.purpose]
}
