"""Accord's consent model as Pydantic shapes: what the API accepts and returns.

A consent belongs to one survivor and holds provisions. A provision permits or denies
categories of data, for purposes, to recipients (named partners and/or partner types),
within a period. Deny beats permit (R2). ``"*"`` in categories means every non-sensitive
category: sensitive ones count only when named (R10).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from services.vocabulary import Category, PartnerType, Purpose

PSEUDONYM = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
PARTNER_ID = r"^[a-z0-9][a-z0-9-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Recipients(Strict):
    partners: list[str] = Field(default=[], description="Named partner ids.")
    partner_types: list[PartnerType | Literal["*"]] = Field(
        default=[], description='Partner types; "*" is every type.'
    )

    @model_validator(mode="after")
    def _some(self) -> Self:
        if not self.partners and not self.partner_types:
            raise ValueError("name at least one partner or partner type")
        for i, p in enumerate(self.partners):
            if not re.fullmatch(PARTNER_ID, p):  # where, never what: it may be a name
                raise ValueError(f"partners[{i}] is not a partner id")
        return self


class Period(Strict):
    start: AwareDatetime
    end: AwareDatetime | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end is not None and self.end <= self.start:
            raise ValueError("the period must end after it starts")
        return self

    def covers(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


class Provision(Strict):
    type: Literal["permit", "deny"]
    recipients: Recipients
    purposes: list[Purpose | Literal["*"]] = Field(min_length=1)
    categories: list[Category | Literal["*"]] = Field(
        min_length=1, description='"*" is every non-sensitive category (R10).'
    )
    period: Period


class RecordedBy(Strict):
    role: Literal["self", "advocate", "guardian"]
    actor: str = Field(description="Who recorded it: the credential's subject.")
    relation: str | None = Field(default=None, description="A guardian's relation to the minor.")
    suspect: bool = Field(default=False, description="A guardian recorded as a suspect (R5).")


class Evidence(Strict):
    kind: Literal["signed_statement", "form_reference"]
    reference: str = Field(min_length=1, max_length=500)


Status = Literal["active", "revoked", "expired"]


class ConsentIn(Strict):
    """A grant, or a new version that narrows (or widens) an existing consent."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "provisions": [
                        {
                            "type": "permit",
                            "recipients": {"partners": [], "partner_types": ["shelter"]},
                            "purposes": ["service_referral"],
                            "categories": ["identity", "contact", "service_need"],
                            "period": {"start": "2026-03-01T00:00:00Z", "end": None},
                        },
                        {
                            "type": "deny",
                            "recipients": {"partners": [], "partner_types": ["*"]},
                            "purposes": ["*"],
                            "categories": ["location"],
                            "period": {"start": "2026-03-01T00:00:00Z", "end": None},
                        },
                    ],
                    "evidence": {"kind": "form_reference", "reference": "intake form 2026-03-01"},
                }
            ]
        }
    )

    provisions: list[Provision] = Field(min_length=1, max_length=50)
    evidence: Evidence


class Consent(Strict):
    """One version of a consent, as stored and as published to the relay."""

    id: str
    survivor_id: str = Field(pattern=PSEUDONYM)
    version: int = Field(ge=1)
    status: Status
    provisions: list[Provision]
    recorded_by: RecordedBy
    evidence: Evidence | None = Field(
        description="Null when it was erased with the survivor's data key (evidence_erased)."
    )
    evidence_erased: bool = Field(
        default=False,
        description="The survivor's data key for this version was destroyed: its evidence "
        "can no longer be read by anyone (crypto-shredding, docs/at-rest.md).",
    )
    recorded_at: AwareDatetime
