package accord.validation_test

import data.accord.testing
import data.accord.validation

vocabulary := data.accord.vocabulary

classified_fields := {field | some fields in data.accord.classification.event_types; some field, _ in fields}

test_R1_base_item_is_well_formed if {
	validation.well_formed(testing.base)
}

test_R1_non_list_declarations_are_malformed if {
	not validation.well_formed(testing.patched(testing.base, "/declarations", "none"))
	not validation.well_formed(testing.patched(testing.base, "/court_orders", {}))
}

test_R1_every_classification_uses_a_known_category if {
	every fields in data.accord.classification.event_types {
		every _, category in fields {
			category in vocabulary.categories
		}
	}
}

test_R7_internal_types_and_fields_are_classified if {
	every type in data.accord.classification.internal_types {
		data.accord.classification.event_types[type]
	}
	every field in data.accord.classification.internal_fields {
		field in classified_fields
	}
}

test_R10_sensitive_and_special_categories_are_known if {
	every category in vocabulary.sensitive_categories {
		category in vocabulary.categories
	}
	every category in vocabulary.never_shared_categories {
		category in vocabulary.categories
	}
	every category in vocabulary.redisclosure_notice_categories {
		category in vocabulary.sensitive_categories
	}
}

test_R6_need_to_know_matrix_uses_known_words if {
	every type, row in data.accord.need_to_know {
		type in vocabulary.partner_types
		every purpose, categories in row {
			purpose in vocabulary.purposes
			every category in categories {
				category in vocabulary.categories
				not category in vocabulary.never_shared_categories
			}
		}
	}
}

test_R12_jurisdiction_field_sets_name_classified_fields if {
	every _, override in data.accord.jurisdictions.overrides {
		settings := object.union(data.accord.jurisdictions["default"], override)
		every field in settings.mandated_report.fields {
			field in classified_fields
		}
		every field in settings.imminent_danger.fields {
			field in classified_fields
		}
		every type in settings.mandated_report.recipients {
			type in vocabulary.partner_types
		}
	}
}

test_R1_unknown_purpose_is_malformed if {
	not validation.well_formed(testing.patched(testing.base, "/purpose", "marketing"))
}

test_R1_unknown_event_type_is_malformed if {
	not validation.well_formed(testing.patched(testing.base, "/event/type", "accord.unheard.of"))
}
