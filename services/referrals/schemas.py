"""Referrals over HTTP: what an agency sends to make one, what a party sends to move one, and
what each reader gets back (a partner never sees the referrer's side: the rules that stopped
an earlier referral, the partner's own note is not echoed to anyone but the referrer)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.contact.schemas import SharedPreference
from services.events.cloudevents import CloudEvent
from services.vocabulary import PartnerType, Purpose

REFERRAL_ID = r"^ref-[a-z0-9]{8,40}$"
PARTY_ID = r"^[a-z0-9][a-z0-9-]{0,63}$"


class ReferTo(BaseModel):
    """A named partner, or the partner type of a jurisdiction (Accord picks an eligible
    partner of that type the policy lets receive the referral)."""

    model_config = ConfigDict(extra="forbid")

    partner_id: str | None = Field(default=None, pattern=PARTY_ID)
    partner_type: PartnerType | None = None
    jurisdiction: str | None = Field(default=None, pattern=PARTY_ID)

    @model_validator(mode="after")
    def _one_way(self) -> ReferTo:
        named = self.partner_id is not None
        typed = self.partner_type is not None or self.jurisdiction is not None
        if named == typed or (typed and (self.partner_type is None or self.jurisdiction is None)):
            raise ValueError("give partner_id, or partner_type with jurisdiction")
        return self


class ReferralIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "to": {"partner_type": "shelter", "jurisdiction": "state-a"},
                    "purpose": "service_referral",
                    "event": CloudEvent.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                }
            ]
        },
    )

    to: ReferTo
    purpose: Purpose = Field(description="Not mandated_report: R5 reports are not referrals.")
    supersedes: str | None = Field(
        default=None,
        pattern=REFERRAL_ID,
        description="A re-referral: the declined, expired, withdrawn or refused one it follows.",
    )
    event: CloudEvent = Field(
        description="The referral's payload: an `accord.referral.made` CloudEvent signed by "
        "your agency, as for POST /v1/events. The relay decides what the partner receives."
    )


class MoveIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"code": "no_capacity", "note": "Full until Friday."}]},
    )

    code: str | None = Field(
        default=None,
        max_length=64,
        description="decline: a reason (required); complete: an outcome (required); close: a "
        "reason (required); withdraw: a reason (optional). GET /v1/referrals/codes lists them.",
    )
    note: str | None = Field(
        default=None,
        max_length=2000,
        description="decline only: free text for the referring agency, sealed at rest and "
        "never shared onward.",
    )


class ChangeOut(BaseModel):
    seq: int
    action: str
    source: str | None = Field(description="The state before (null: made).")
    target: str
    actor: str
    code: str | None
    at: datetime


class ReferralOut(BaseModel):
    id: str
    state: str
    agency_id: str
    survivor_id: str
    partner_id: str
    partner_type: str
    jurisdiction: str
    addressed_as: str = Field(description="`partner` (named) or `type` (resolved by Accord).")
    purpose: str
    event_id: str
    supersedes: str | None = None
    made_at: datetime
    delivered_at: datetime | None
    acknowledged_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    reason_code: str | None
    outcome_code: str | None
    released: list[str] = Field(description="Field names the relay delivered (never values).")
    withheld: list[dict[str, Any]] = Field(
        default_factory=list, description="Field names withheld and the rules why."
    )
    refused_rules: list[str] = Field(
        default_factory=list,
        description="State refused: the rule ids that let nothing through (ask the survivor).",
    )
    note: str | None = Field(
        default=None, description="The partner's note on a decline: the referring agency only."
    )
    contact_preference: SharedPreference | None = Field(
        default=None,
        description="The addressed partner only, once delivered, and only where the survivor "
        "consented to share contact data with it: how (and whether) the survivor may be "
        "contacted. Honour it: a call to a phone a trafficker holds is itself a harm.",
    )
    history: list[ChangeOut]


class CodesOut(BaseModel):
    decline: list[str]
    complete: list[str]
    close: list[str]
    withdraw: list[str]


class SurvivorReferralOut(BaseModel):
    """What a survivor (or their advocate or guardian) sees of a referral about them."""

    id: str
    state: str
    partner_id: str
    partner_type: str
    purpose: str
    made_at: datetime
    sent: list[str] = Field(description="The field names the partner received (never values).")
    refused_rules: list[str]
    history: list[ChangeOut]
