from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.consent.schemas import PARTNER_ID


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeclarationIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "justification": "Credible threat reported by the survivor this morning; "
                    "the exploiter knows the current address.",
                    "tell_survivor": True,
                }
            ]
        }
    )

    justification: str = Field(min_length=20, max_length=4000, description="Why, in writing (R8).")
    tell_survivor: bool = Field(
        default=True, description="False only if telling the survivor would endanger them."
    )


class DeclarationOut(BaseModel):
    id: str
    survivor_id: str
    agency_id: str
    declared_at: datetime
    ended_at: datetime | None
    tell_survivor: bool


class CourtOrderIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "reference": "2026-FC-00417",
                    "court": "Family Court, State A",
                    "recipient": "metro-police",
                    "fields": ["survivor_name", "date_of_birth"],
                    "expires_at": "2026-09-30T00:00:00Z",
                    "justification": "Order to disclose identity for the protective order.",
                }
            ]
        }
    )

    reference: str = Field(min_length=1, max_length=128)
    court: str = Field(min_length=1, max_length=200)
    recipient: str = Field(pattern=PARTNER_ID, description="The partner the order names.")
    fields: list[str] = Field(min_length=1, max_length=100, description="Exactly these fields.")
    expires_at: AwareDatetime
    justification: str = Field(min_length=1, max_length=4000)


class CourtOrderOut(BaseModel):
    id: str
    survivor_id: str
    reference: str | None = Field(description="Null when erased with the survivor's data key.")
    court: str | None = Field(description="Null when erased with the survivor's data key.")
    recipient: str
    fields: list[str]
    expires_at: datetime
