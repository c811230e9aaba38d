"""CloudEvents 1.0, structured JSON mode, as Accord uses it.

``source`` is ``/agencies/<agency id>``; ``subject`` is the survivor's pseudonymous id;
``data`` is a flat JSON object whose fields are classified per event type in the policy data.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SOURCE_PREFIX = "/agencies/"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class CloudEvent(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "specversion": "1.0",
                    "id": "harbor-2026-000123",
                    "source": "/agencies/harbor-outreach",
                    "type": "accord.referral.made",
                    "subject": "sv-7f3a9c",
                    "time": "2026-03-02T10:15:00Z",
                    "datacontenttype": "application/json",
                    "data": {"age": 34, "referral_reason": "housing", "urgency": "high"},
                    "accordsignature": "<base64 Ed25519 signature over the canonical event>",
                }
            ]
        },
    )

    specversion: Literal["1.0"]
    id: str = Field(pattern=ID_PATTERN)
    source: str = Field(pattern=r"^/agencies/[a-z0-9][a-z0-9-]{0,63}$")
    type: str = Field(pattern=r"^accord\.[a-z_]+\.[a-z_]+$")
    subject: str = Field(pattern=ID_PATTERN, description="The survivor's pseudonymous id.")
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]

    @property
    def agency_id(self) -> str:
        return self.source.removeprefix(SOURCE_PREFIX)


def source_for(agency_id: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", agency_id):
        raise ValueError("agency ids are lowercase letters, digits and dashes")
    return SOURCE_PREFIX + agency_id
