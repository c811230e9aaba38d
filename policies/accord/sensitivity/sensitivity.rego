# METADATA
# title: Never-shared data (R7) and sensitive categories (R10)
# description: >-
#   The vocabulary's lists as sets (built once per query, then looked up), and the bars of
#   a partner as a function of its type and immigration-enforcement flag only, so they are
#   computed once per kind of partner in a batch.
package accord.sensitivity

vocabulary := data.accord.vocabulary

classification := data.accord.classification

# METADATA
# title: A category that needs to be named explicitly in a consent
# custom:
#   rule: R10
sensitive(category) if category in sensitive_categories

# METADATA
# title: Categories that need to be named explicitly in a consent
# custom:
#   rule: R10
sensitive_categories := {category | some category in vocabulary.sensitive_categories}

# METADATA
# title: Categories that never leave the publishing agency (shelter location)
# custom:
#   rule: R7
never_shared_categories := {category | some category in vocabulary.never_shared_categories}

# METADATA
# title: Fields internal to the publishing agency, whatever their category
# custom:
#   rule: R7
internal_fields := {field | some field in classification.internal_fields}

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
barred_categories(item) := barred_for(item.partner.type, object.get(item.partner, "immigration_enforcement", null))

barred_for(type, immigration_enforcement) := by_type | by_enforcement if {
	by_type := {category | some category in vocabulary.barred_categories_by_partner_type[type]}
	by_enforcement := {category |
		immigration_enforcement == true
		some category in vocabulary.barred_categories_for_immigration_enforcement
	}
}

# METADATA
# title: Categories whose released data carries a re-disclosure prohibition notice
# custom:
#   rule: R10
redisclosure_notice_categories := {category | some category in vocabulary.redisclosure_notice_categories}
