package accord.aggregate_test

import data.accord.aggregate

test_R15_small_count_threshold_defaults_to_11 if {
	data.accord.jurisdictions["default"].small_count_threshold == 11
	aggregate.threshold("state-a") == 11
	aggregate.threshold("state-b") == 11
}

test_R15_counts_below_the_threshold_are_suppressed if {
	aggregate.suppressed(0, "state-a")
	aggregate.suppressed(10, "state-a")
	not aggregate.suppressed(11, "state-a")
	not aggregate.suppressed(250, "state-b")
}

test_R15_unknown_jurisdiction_suppresses_every_count if {
	aggregate.suppressed(1000, "atlantis")
}

test_R15_threshold_is_configurable if {
	aggregate.suppressed(
		15,
		"state-a",
	) with data.accord.jurisdictions.overrides["state-a"] as {"small_count_threshold": 20}
}
