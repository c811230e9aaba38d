"""Keys made for this test session: agencies sign what they publish (``sign``), partners open
deliveries (``opener``), the relay seals with ``RELAY_KEY``, the checkpointer signs with
``AUDIT_KEY``."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from services.broker.pipeline import seal
from services.events import provenance

# Keys made for this test session: agencies sign what they publish, partners open deliveries.
AGENCY_KEYS = {a: SigningKey.generate() for a in ("harbor-outreach", "valley-school")}


RELAY_KEY = PrivateKey.generate()


AUDIT_KEY = SigningKey.generate()  # signs the audit chain's checkpoints (the checkpointer's)


PARTNER_KEYS: dict[str, PrivateKey] = defaultdict(PrivateKey.generate)


def with_keys(registry: dict[str, Any]) -> dict[str, Any]:
    for agency in registry["agencies"]:
        agency["public_key"] = provenance.public_key_of(AGENCY_KEYS[agency["id"]])
    for p in registry["partners"]:
        p["public_key"] = seal.public_key_of(PARTNER_KEYS[p["id"]])
    return registry


def sign(event: dict[str, Any]) -> dict[str, Any]:
    """Sign as the agency the event claims to come from."""
    agency = event["source"].removeprefix("/agencies/")
    return provenance.sign_event(event, AGENCY_KEYS[agency])


def opener(partner_id: str) -> Callable[[bytes], dict[str, Any]]:
    """Open what a partner's topic holds: sealed deliveries, and plain notices."""
    relay = seal.public_key_of(RELAY_KEY)

    def open_record(value: bytes) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(value)
        if "box" not in doc:
            return doc  # a consent.revoked notice carries no personal data and is not sealed
        return seal.open_delivery(
            value, partner_id=partner_id, partner_key=PARTNER_KEYS[partner_id], relay_key=relay
        ).event

    return open_record
