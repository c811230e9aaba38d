package accord.consent_test

import data.accord.consent
import data.accord.decision
import data.accord.testing

shelter_with(consents) := decision.decide(testing.item(testing.shelter, "service_referral", consents))

test_R2_deny_provision_beats_permit if {
	d := shelter_with([testing.consent([
		testing.permit(["shelter"], ["service_referral"], ["*"]),
		testing.deny(["*"], ["*"], ["contact"]),
	])])
	not "phone" in testing.released(d)
	testing.rules_of(d, "phone") == {"R2"}
	"survivor_name" in testing.released(d)
}

test_R2_deny_in_another_consent_still_beats_permit if {
	other := object.union(
		testing.consent([testing.deny(["shelter"], ["service_referral"], ["identity"])]),
		{"id": "c-2"},
	)
	d := shelter_with([testing.ordinary_consent, other])
	not "survivor_name" in testing.released(d)
	"phone" in testing.released(d)
}

test_R2_deny_star_covers_sensitive_categories_too if {
	testing.deny(["*"], ["*"], ["*"]).type == "deny"
	consent.denied(
		consent.view(testing.item(
			testing.shelter,
			"service_referral",
			[testing.consent([testing.deny(["*"], ["*"], ["*"])])],
		)),
		"hiv_sti",
	)
}

test_R2_permit_for_other_partner_type_releases_nothing if {
	testing.nothing_released(shelter_with([testing.consent([testing.permit(["health"], ["service_referral"], ["*"])])]))
}

test_R2_permit_for_other_purpose_releases_nothing if {
	testing.nothing_released(shelter_with([
		testing.consent([testing.permit(["shelter"], ["care_coordination"], ["*"])]),
	]))
}

test_R2_permit_by_partner_id_and_any_purpose if {
	d := shelter_with([testing.consent([testing.permit_partner("shelter-1", ["*"], ["identity"])])])
	testing.released(d) == {"survivor_name", "date_of_birth"}
	testing.rules_of(d, "phone") == {"R2"}
}

test_R2_permit_for_any_partner_type if {
	d := shelter_with([testing.consent([testing.permit(["*"], ["service_referral"], ["identity"])])])
	testing.released(d) == {"survivor_name", "date_of_birth"}
}

test_R2_only_consents_that_permitted_a_released_field_are_named if {
	unused := object.union(testing.consent([testing.permit(["health"], ["*"], ["*"])]), {"id": "c-9", "version": 1})
	d := shelter_with([unused, testing.ordinary_consent])
	d.consents == [{"id": "c-1", "version": 3}]
}

test_R3_revoked_consent_releases_nothing if {
	revoked := object.union(testing.ordinary_consent, {"status": "revoked"})
	d := shelter_with([revoked])
	testing.nothing_released(d)
	testing.rules_of(d, "survivor_name") == {"R2", "R3"}
	d.consents == []
}

test_R3_provision_past_its_end_releases_nothing if {
	ended := testing.consent([json.patch(
		testing.permit(["shelter"], ["service_referral"], ["*"]),
		[{"op": "replace", "path": "/period/end", "value": "2026-11-24T11:59:59Z"}],
	)])
	d := shelter_with([ended])
	testing.nothing_released(d)
	"R3" in testing.rules_of(d, "survivor_name")
}

test_R3_provision_ending_after_now_still_releases if {
	ending := testing.consent([json.patch(
		testing.permit(["shelter"], ["service_referral"], ["*"]),
		[{"op": "replace", "path": "/period/end", "value": "2026-11-24T12:00:01Z"}],
	)])
	"survivor_name" in testing.released(shelter_with([ending]))
}

test_R3_provision_not_yet_started_releases_nothing if {
	future := testing.consent([json.patch(
		testing.permit(["shelter"], ["service_referral"], ["*"]),
		[{"op": "replace", "path": "/period/start", "value": "2026-12-01T00:00:00Z"}],
	)])
	testing.nothing_released(shelter_with([future]))
}

test_R3_ended_deny_no_longer_applies if {
	old_deny := json.patch(
		testing.deny(["*"], ["*"], ["identity"]),
		[{"op": "replace", "path": "/period/end", "value": "2026-06-01T00:00:00Z"}],
	)
	d := shelter_with([testing.consent([testing.permit(["shelter"], ["service_referral"], ["*"]), old_deny])])
	"survivor_name" in testing.released(d)
}

test_R2_deny_with_malformed_period_still_denies if {
	odd_deny := json.patch(
		testing.deny(["*"], ["*"], ["identity"]),
		[{"op": "replace", "path": "/period/start", "value": "soon"}],
	)
	d := shelter_with([testing.consent([testing.permit(["shelter"], ["service_referral"], ["*"]), odd_deny])])
	not "survivor_name" in testing.released(d)
}

test_R3_revoked_consent_does_not_hide_a_live_one if {
	revoked := object.union(testing.ordinary_consent, {"id": "c-0", "status": "revoked"})
	d := shelter_with([revoked, testing.ordinary_consent])
	"survivor_name" in testing.released(d)
	d.consents == [{"id": "c-1", "version": 3}]
}

test_R5_consent_recorded_by_suspect_guardian_does_not_count if {
	suspect := object.union(testing.ordinary_consent, {"recorded_by": {"role": "guardian", "suspect": true}})
	d := shelter_with([suspect])
	testing.nothing_released(d)
	testing.rules_of(d, "survivor_name") == {"R2", "R5"}
}

test_R5_guardian_without_suspect_flag_does_not_count if {
	unclear := object.union(testing.ordinary_consent, {"recorded_by": {"role": "guardian"}})
	testing.nothing_released(shelter_with([unclear]))
}

test_R5_consent_recorded_by_cleared_guardian_counts if {
	cleared := object.union(testing.ordinary_consent, {"recorded_by": {"role": "guardian", "suspect": false}})
	"survivor_name" in testing.released(shelter_with([cleared]))
}

test_R5_consent_recorded_by_advocate_counts if {
	advocate := object.union(testing.ordinary_consent, {"recorded_by": {"role": "advocate"}})
	"survivor_name" in testing.released(shelter_with([advocate]))
}

test_R2_deny_not_yet_started_does_not_apply_yet if {
	later_deny := json.patch(
		testing.deny(["*"], ["*"], ["identity"]),
		[{"op": "replace", "path": "/period/start", "value": "2026-12-01T00:00:00Z"}],
	)
	d := shelter_with([testing.consent([testing.permit(["shelter"], ["service_referral"], ["*"]), later_deny])])
	"survivor_name" in testing.released(d)
}
