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
# title: Settings an item is judged under (the publishing agency's jurisdiction)
# custom:
#   rule: R12
config(item) := settings(item.event.agency.jurisdiction)
