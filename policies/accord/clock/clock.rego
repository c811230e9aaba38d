# METADATA
# title: Decision time
# description: >-
#   The only notion of "now" is the item's `now` (R13: same input, same decision).
#   Timestamps are RFC 3339; anything else is undefined, so every check that needs
#   a time fails closed (R1).
package accord.clock

# METADATA
# title: Decision time of an item, in nanoseconds
# custom:
#   rule: R13
now_ns(item) := time.parse_rfc3339_ns(item.now)

# METADATA
# title: An RFC 3339 timestamp in nanoseconds (undefined if malformed)
at(ts) := time.parse_rfc3339_ns(ts) if is_string(ts)

# METADATA
# title: An open end (null) or an end still in the future
not_ended(end, _) if end == null

not_ended(end, now) if now < at(end)
