"""Time-limited consent (R3, R12): each permit ends within its jurisdiction's maximum duration.

Pure functions of the consent and the limits. What happens once a time-limited consent is
made (the survivor's renewal notice, services/contact/renewal.py) is passed in by the API as
``TimeLimits.on_made``, so consent needs nothing of contact above it.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from services.consent.schemas import Consent, ConsentIn, Period, Provision
from services.policy_data import ConsentLimits


class OnMade(Protocol):
    def __call__(
        self, session: Session, consent: Consent, *, now: datetime, limits: ConsentLimits
    ) -> object: ...


@dataclass(frozen=True)
class TimeLimits:
    """What a grant or an amendment needs beyond its body: where the jurisdictions' maximum
    durations are (policy data, R12), and what runs in its transaction once it is made."""

    policies_dir: pathlib.Path
    on_made: OnMade


def capped(provision: Provision, *, now: datetime, limits: ConsentLimits) -> Provision:
    if provision.type != "permit":
        return provision
    limit = max(provision.period.start, now) + limits.max_duration
    end = provision.period.end
    if end is not None and end <= limit:
        return provision
    return provision.model_copy(update={"period": Period(start=provision.period.start, end=limit)})


def time_limited(data: ConsentIn, *, now: datetime, limits: ConsentLimits) -> ConsentIn:
    """``data`` with each permit ending within the jurisdiction's maximum (see above)."""
    provisions = [capped(p, now=now, limits=limits) for p in data.provisions]
    return data.model_copy(update={"provisions": provisions})


def ends_at(consent: Consent) -> datetime | None:
    """When the consent stops permitting anything: its permits' latest end (None: no permit,
    or one without an end, recorded before consents were time-limited)."""
    ends = [p.period.end for p in consent.provisions if p.type == "permit"]
    if not ends or any(e is None for e in ends):
        return None
    return max(e for e in ends if e is not None)
