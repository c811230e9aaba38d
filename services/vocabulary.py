"""The shared vocabulary of rules.md: partner types, purposes, data categories.

The policy data in ``policies/`` uses the same words; a test checks that the two agree.
"""

from __future__ import annotations

from enum import StrEnum


class PartnerType(StrEnum):
    VICTIM_SERVICES = "victim_services"
    SHELTER = "shelter"
    HEALTH = "health"
    BEHAVIORAL_HEALTH = "behavioral_health"
    CHILD_WELFARE = "child_welfare"
    JUVENILE_JUSTICE = "juvenile_justice"
    LAW_ENFORCEMENT = "law_enforcement"
    PROSECUTION = "prosecution"
    COURT = "court"
    LEGAL_AID = "legal_aid"
    EDUCATION = "education"
    IMMIGRATION_SERVICES = "immigration_services"
    HOUSING = "housing"
    EMPLOYMENT = "employment"
    BENEFITS = "benefits"
    COMMUNITY_ORG = "community_org"
    EMERGENCY_SERVICES = "emergency_services"


class Purpose(StrEnum):
    SERVICE_REFERRAL = "service_referral"
    CARE_COORDINATION = "care_coordination"
    SAFETY_PLANNING = "safety_planning"
    MANDATED_REPORT = "mandated_report"
    INVESTIGATION = "investigation"
    PROSECUTION = "prosecution"
    COURT_PROCEEDING = "court_proceeding"
    BENEFITS_ELIGIBILITY = "benefits_eligibility"
    EMERGENCY_RESPONSE = "emergency_response"
    RESEARCH_DEIDENTIFIED = "research_deidentified"


class Category(StrEnum):
    IDENTITY = "identity"
    CONTACT = "contact"
    LOCATION = "location"
    SHELTER_LOCATION = "shelter_location"
    DEMOGRAPHICS = "demographics"
    VICTIMIZATION = "victimization"
    SERVICE_NEED = "service_need"
    CASE_STATUS = "case_status"
    HEALTH = "health"
    REPRODUCTIVE_HEALTH = "reproductive_health"
    HIV_STI = "hiv_sti"
    MENTAL_HEALTH = "mental_health"
    SUBSTANCE_USE = "substance_use"
    IMMIGRATION = "immigration"
    CRIMINAL_HISTORY = "criminal_history"
    COURT = "court"
    BENEFITS = "benefits"
    NARRATIVE = "narrative"


SENSITIVE: frozenset[Category] = frozenset(
    {
        Category.HEALTH,
        Category.REPRODUCTIVE_HEALTH,
        Category.HIV_STI,
        Category.MENTAL_HEALTH,
        Category.SUBSTANCE_USE,
        Category.IMMIGRATION,
        Category.CRIMINAL_HISTORY,
        Category.NARRATIVE,
    }
)

ANY = "*"  # in a provision: any partner type / any purpose / all NON-sensitive categories (R10)
