# METADATA
# title: Never-shared data (R7) and sensitive categories (R10)
package accord.sensitivity

vocabulary := data.accord.vocabulary

classification := data.accord.classification

# METADATA
# title: A category that needs to be named explicitly in a consent
# custom:
#   rule: R10
sensitive(category) if category in vocabulary.sensitive_categories

# METADATA
# title: The field never leaves the publishing agency (shelter location, internal fields)
# custom:
#   rule: R7
never_leaves(_, category) if category in vocabulary.never_shared_categories

never_leaves(field, _) if field in classification.internal_fields

# METADATA
# title: The event is of an internal-only type
# custom:
#   rule: R7
internal_event_type(item) if item.event.type in classification.internal_types

# METADATA
# title: The category never goes to this kind of partner, whatever the basis
# description: criminal_history never to housing/employment; immigration never to immigration enforcement.
# custom:
#   rule: R10
barred_for_partner(item, category) if category in barred_categories(item)

# METADATA
# title: Categories barred for this partner (empty if none)
# custom:
#   rule: R10
barred_categories(item) := {category | some category in vocabulary.barred_categories_by_partner_type[item.partner.type]} | {category |
	item.partner.immigration_enforcement == true
	some category in vocabulary.barred_categories_for_immigration_enforcement
}

# METADATA
# title: Released data of this category carries a re-disclosure prohibition notice
# custom:
#   rule: R10
needs_redisclosure_notice(category) if category in vocabulary.redisclosure_notice_categories
