"""Safe-contact preferences as the API accepts and returns them.

A preference says whether the survivor may be contacted at all (``do_not_contact``), by which
channels in order of preference, at which safe times (weekly windows in the survivor's time
zone) and with which code word the caller proves who they are. It holds no phone number or
address: the agency keeps those; the preference says which of them is safe to use.
"""

from __future__ import annotations

from datetime import time
from enum import StrEnum
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator


class Channel(StrEnum):
    """How the survivor may be reached (the agency holds the number or address itself)."""

    PHONE_CALL = "phone_call"
    SMS = "sms"
    EMAIL = "email"
    LETTER = "letter"
    IN_PERSON = "in_person"


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def number(self) -> int:
        """Monday 0 … Sunday 6, as ``date.weekday()``."""
        return list(Weekday).index(self)


HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class SafeWindow(BaseModel):
    """A weekly window in the preference's time zone: on ``days``, from ``start`` to ``end``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[Weekday] = Field(min_length=1, max_length=7)
    start: str = Field(pattern=HHMM, description="Local time HH:MM, e.g. 09:00.")
    end: str = Field(
        pattern=HHMM, description="Local time HH:MM, after start (split a window over midnight)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_time <= self.start_time:
            raise ValueError("the window must end after it starts (split one over midnight)")
        return self

    @property
    def start_time(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def end_time(self) -> time:
        return time.fromisoformat(self.end)


class ContactPreferenceIn(BaseModel):
    """What the survivor (or the advocate or guardian with them) records."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "do_not_contact": False,
                    "channels": ["phone_call", "email"],
                    "safe_times": [
                        {
                            "days": ["mon", "tue", "wed", "thu", "fri"],
                            "start": "10:00",
                            "end": "14:00",
                        }
                    ],
                    "time_zone": "America/Chicago",
                    "code_word": "bluebird",
                },
                {"do_not_contact": True},
            ]
        },
    )

    do_not_contact: bool = Field(
        default=False,
        description="True: Accord sends no notice and asks no one to contact the survivor; each "
        "notice is recorded as suppressed.",
    )
    channels: list[Channel] = Field(
        default=[], max_length=5, description="Safe channels, most preferred first."
    )
    safe_times: list[SafeWindow] = Field(
        default=[], max_length=21, description="When contact is safe; empty: at any time."
    )
    time_zone: str = Field(
        default="UTC", max_length=64, description="IANA name of safe_times' zone."
    )
    code_word: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Said by whoever contacts the survivor, so they know the contact is safe.",
    )

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:  # never the value: it may be anything
            raise ValueError("not an IANA time zone name, e.g. Europe/Berlin") from exc
        return value

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if not self.do_not_contact and not self.channels:
            raise ValueError("name at least one channel, or set do_not_contact")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("each channel once")
        return self


class ContactPreferenceOut(ContactPreferenceIn):
    survivor_id: str
    updated_at: AwareDatetime
    updated_by: str = Field(description="The credential subject that recorded it.")


class SharedPreference(BaseModel):
    """What a partner receives with a referral, only where the survivor consented to share
    contact data with it (``services.contact.service.preference_for_partner``)."""

    model_config = ConfigDict(frozen=True)

    do_not_contact: bool
    channels: list[Channel]
    safe_times: list[SafeWindow]
    time_zone: str
    code_word: str | None


class NoticeOut(BaseModel):
    """One notice to (or about reaching) the survivor, as the gate decided it. No content."""

    id: str
    survivor_id: str
    type: str
    status: str = Field(
        description="pending, held (until the next safe time), sent, suppressed (do not "
        "contact, or the survivor's data was erased) or withdrawn (no longer applies)."
    )
    channel: Channel | None = Field(description="The channel to use; null if not sent.")
    due_at: AwareDatetime
    created_at: AwareDatetime
    decided_at: AwareDatetime | None
    reason: str | None
