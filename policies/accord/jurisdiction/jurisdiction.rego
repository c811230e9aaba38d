# METADATA
# title: Jurisdictions (R12)
# description: >-
#   Settings of a jurisdiction = data.accord.jurisdictions.default, with the need-to-know
#   matrix of data.accord.need_to_know, overlaid (recursively) by
#   data.accord.jurisdictions.overrides[<id>]. Only ids under `overrides` are known;
#   an event from an unknown jurisdiction is denied (R1).
package accord.jurisdiction

# METADATA
# title: A jurisdiction Accord has rules for
# custom:
#   rule: R12
known(id) if {
	is_string(id)
	id in object.keys(data.accord.jurisdictions.overrides)
}

# METADATA
# title: Effective settings of a jurisdiction
# custom:
#   rule: R12
settings(id) := object.union(
	object.union(data.accord.jurisdictions.default, {"need_to_know": data.accord.need_to_know}),
	data.accord.jurisdictions.overrides[id],
)

# METADATA
# title: The jurisdiction an item is judged under (the publishing agency's)
# description: >-
#   The concerns pass this id, not the item, to functions of their own (which take
#   `settings(id)`), so that a batch computes them once per jurisdiction.
# custom:
#   rule: R12
of(item) := item.event.agency.jurisdiction
