"""Each change of a referral's state as a CloudEvent (``accord.referral_state.<state>``).

The data is ids and codes only (schemas in ``schemas/referrals/``, one per state): never a
field value of the referral's payload, never a partner's free text. They go to the referrals
topic (keyed by referral id, in order per referral); the delivery, withdrawal or expiry of a
referral the partner received also goes, unsealed like ``consent.revoked`` notices, to the
partner's topic.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from services.referrals.models import Referral, ReferralChange

TYPE_PREFIX = "accord.referral_state."
SOURCE = "/accord/referrals"
# The event type a referral's payload travels as, through the relay like every event.
PAYLOAD_TYPE = "accord.referral.made"
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas" / "referrals"
# What the addressed partner is told on its own topic, unsealed (ids and codes): that the
# delivery it received is a referral (its id, to move it), and that it was withdrawn or expired.
TOLD_PARTNER = frozenset({"delivered", "withdrawn", "expired"})


def _ts(change: ReferralChange) -> str:
    return change.at.isoformat().replace("+00:00", "Z")


def event_id(referral_id: str, seq: int) -> str:
    return f"{referral_id}.{seq}"


def cloudevent(referral: Referral, change: ReferralChange) -> dict[str, Any]:
    data: dict[str, Any] = {
        "referral_id": referral.id,
        "state": change.target,
        "previous_state": change.source,
        "action": change.action,
        "seq": change.seq,
        "event_id": referral.event_id,
        "agency_id": referral.agency_id,
        "partner_id": referral.partner_id,
        "partner_type": referral.partner_type,
        "purpose": referral.purpose,
        "supersedes": referral.supersedes,
    }
    if change.target in ("declined", "completed", "closed", "withdrawn"):
        data["code"] = change.code
    if change.target == "refused":
        data["rules"] = list(referral.refused_rules)
    if change.target == "delivered":
        data["released"] = list(referral.released)
    return {
        "specversion": "1.0",
        "id": event_id(referral.id, change.seq),
        "source": SOURCE,
        "type": TYPE_PREFIX + change.target,
        "subject": referral.survivor_id,
        "time": _ts(change),
        "datacontenttype": "application/json",
        "data": data,
    }


@lru_cache(maxsize=16)
def validator(state: str) -> Draft202012Validator:
    path = SCHEMAS_DIR / f"{TYPE_PREFIX}{state}.json"
    return Draft202012Validator(json.loads(path.read_text()))


def problems(event: dict[str, Any]) -> list[str]:
    """Where an event's data does not match its type's schema (empty: it does)."""
    state = str(event["type"]).removeprefix(TYPE_PREFIX)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(data)'}: {e.validator}"
        for e in validator(state).iter_errors(event["data"])
    ]


def for_partner(event: dict[str, Any]) -> dict[str, Any]:
    """The copy for the addressed partner: not which referral it supersedes (that an earlier
    partner declined is the referrer's business)."""
    data = {k: v for k, v in event["data"].items() if k != "supersedes"}
    return {**event, "data": data}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
