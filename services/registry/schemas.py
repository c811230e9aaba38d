"""Pydantic shapes of the partner registry: the registry file now, the admin API later."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

_ID = r"^[a-z0-9][a-z0-9-]{0,63}$"


class AgencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=_ID)
    name: str
    jurisdiction: str
    public_key: str | None = Field(default=None, description="Ed25519 verify key, base64.")


class AgreementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=_ID)
    purposes: list[str]
    categories: list[str]
    valid_from: AwareDatetime
    valid_until: AwareDatetime


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=_ID)
    event_types: list[str]
    purpose: str


class PartnerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=_ID)
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
