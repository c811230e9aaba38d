"""Pydantic shapes of the partner registry: the registry file (``...In``) and the admin API's
requests and answers (``...Body``, ``...Patch``, ``...Out``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

ID = r"^[a-z0-9][a-z0-9-]{0,63}$"


class AgencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ID)
    name: str
    jurisdiction: str
    public_key: str | None = Field(default=None, description="Ed25519 verify key, base64.")


class AgreementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ID)
    purposes: list[str]
    categories: list[str]
    valid_from: AwareDatetime
    valid_until: AwareDatetime


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ID)
    event_types: list[str]
    purpose: str


class PartnerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ID)
    name: str
    type: str
    jurisdiction: str
    status: str = "active"
    vetted: bool = False
    immigration_enforcement: bool = False
    training_attested_until: AwareDatetime | None = None
    public_key: str | None = Field(default=None, description="Curve25519 public key, base64.")
    agreements: list[AgreementIn] = []
    subscriptions: list[SubscriptionIn] = []


class RegistryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agencies: list[AgencyIn] = []
    partners: list[PartnerIn] = []


# --- the admin API (services/registry/views.py) ---------------------------------------------


class AgencyBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Harbor Street Outreach",
                    "jurisdiction": "state-a",
                    "public_key": "5Dq8vQvVh3v7kq0fJ0c6o1vXQmYb3m2gkq3Kx2mN1aU=",
                }
            ]
        },
    )
    name: str = Field(min_length=1, max_length=200)
    jurisdiction: str = Field(description="A jurisdiction the policies know (R12).")
    public_key: str | None = Field(
        default=None, description="Ed25519 verify key (32 bytes, base64) of its signatures."
    )


class AgencyOut(BaseModel):
    id: str
    name: str
    jurisdiction: str
    public_key: str | None


class AgreementBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ID)
    purposes: list[str] = Field(min_length=1)
    categories: list[str] = Field(min_length=1)
    valid_from: AwareDatetime
    valid_until: AwareDatetime


class SubscriptionBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_types": ["accord.referral.made", "accord.case.identified"],
                    "purpose": "service_referral",
                }
            ]
        },
    )
    event_types: list[str] = Field(min_length=1)
    purpose: str


class SubscriptionOut(SubscriptionBody):
    id: str


class PartnerBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Lighthouse Shelter",
                    "type": "shelter",
                    "jurisdiction": "state-a",
                    "vetted": True,
                    "training_attested_until": "2030-01-01T00:00:00Z",
                    "public_key": "q1Yb0b2l7F3w9hX4m8dJr6tT2uV0cS5eA1kP7nZ3xQE=",
                    "agreements": [
                        {
                            "id": "mou-lighthouse-2026",
                            "purposes": ["service_referral"],
                            "categories": ["identity", "contact", "service_need"],
                            "valid_from": "2026-01-01T00:00:00Z",
                            "valid_until": "2030-01-01T00:00:00Z",
                        }
                    ],
                    "subscriptions": {
                        "sub-lighthouse-2026": {
                            "event_types": ["accord.referral.made"],
                            "purpose": "service_referral",
                        }
                    },
                }
            ]
        },
    )
    name: str = Field(min_length=1, max_length=200)
    type: str = Field(description="A partner type of the vocabulary.")
    jurisdiction: str
    status: Literal["active", "suspended"] = "active"
    vetted: bool = False
    immigration_enforcement: bool = False
    training_attested_until: AwareDatetime | None = Field(
        default=None, description="Until when the partner's staff training is attested (R13)."
    )
    public_key: str | None = Field(
        default=None,
        description="Curve25519 public key (32 bytes, base64) deliveries are sealed to; "
        "without one nothing is delivered.",
    )
    agreements: list[AgreementBody] = []
    subscriptions: dict[str, SubscriptionBody] | None = Field(
        default=None,
        description="By subscription id; omitted keeps the partner's current subscriptions.",
    )


class PartnerPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "suspended"}]}
    )
    status: Literal["active", "suspended"] | None = None
    vetted: bool | None = None
    training_attested_until: AwareDatetime | None = None
    public_key: str | None = None


class AgreementOut(BaseModel):
    id: str
    purposes: list[str]
    categories: list[str]
    valid_from: datetime
    valid_until: datetime


class PartnerOut(BaseModel):
    id: str
    name: str
    type: str
    jurisdiction: str
    status: str
    vetted: bool
    immigration_enforcement: bool
    training_attested_until: datetime | None
    public_key: str | None
    topic: str
    agreements: list[AgreementOut]
    subscriptions: list[SubscriptionOut]
