package accord.deadlines_test

import data.accord.deadlines

test_R12_default_deadlines_are_a_day_to_acknowledge_three_to_answer if {
	d := deadlines.deadlines with input as {"jurisdiction": "state-a", "partner_type": "shelter"}
	d == {"acknowledge_hours": 24, "answer_hours": 72, "expire_hours": 168, "propose_next_partner": true}
}

test_R12_a_jurisdiction_sets_its_own_per_partner_type if {
	d := deadlines.deadlines with input as {"jurisdiction": "state-b", "partner_type": "emergency_services"}
	d.acknowledge_hours == 1
	d.answer_hours == 4
	d.expire_hours == 24
	d.propose_next_partner == true
}

test_R12_other_partner_types_keep_the_defaults if {
	d := deadlines.deadlines with input as {"jurisdiction": "state-b", "partner_type": "shelter"}
	d.acknowledge_hours == 24
}

test_R12_an_unknown_jurisdiction_still_has_deadlines if {
	d := deadlines.deadlines with input as {"jurisdiction": "nowhere", "partner_type": "shelter"}
	d.acknowledge_hours == 24
	d.answer_hours == 72
}
