"""Opening one record: verify that the relay sealed it for this partner, and read it.

A record that is not for this key, was altered, or was not sealed by the expected relay key
raises ``DeliveryRejected``; it is never handed to the caller's handler, and never acked.
The only unsealed records a partner topic holds are notices that carry no personal data:
``accord.consent.revoked``, and a referral's ``accord.referral_state.delivered`` (the referral
id of a payload just delivered), ``…withdrawn`` and ``…expired``; they are passed on marked
``sealed=False``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nacl.public import PrivateKey

from services.broker.pipeline.seal import OpenError, open_delivery

# Unsealed notices, by the source that sends them and their types.
NOTICES: dict[str, frozenset[str]] = {
    "/accord/consent": frozenset({"accord.consent.revoked"}),
    "/accord/referrals": frozenset(
        {
            "accord.referral_state.delivered",
            "accord.referral_state.withdrawn",
            "accord.referral_state.expired",
        }
    ),
}


class DeliveryRejected(OpenError):
    """This record did not come from the relay for this partner, or was altered in transit."""

    def __init__(self, delivery_id: str, reason: str) -> None:
        super().__init__(f"delivery {delivery_id}: {reason}")
        self.delivery_id = delivery_id
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    event: dict[str, Any]  # the CloudEvent, with only the fields released to this partner
    sealed: bool = True  # False: a plain notice (no personal data), not sealed

    @property
    def id(self) -> str:
        return str(self.event.get("id", ""))

    @property
    def type(self) -> str:
        return str(self.event.get("type", ""))

    @property
    def data(self) -> dict[str, Any]:
        data = self.event.get("data")
        return data if isinstance(data, dict) else {}

    @property
    def referral_id(self) -> str | None:
        """For a referral's notice, the referral it is about (move it with ``Referrals``)."""
        if self.sealed or not self.type.startswith("accord.referral_state."):
            return None
        value = self.data.get("referral_id")
        return value if isinstance(value, str) else None


def open_record(
    record: bytes, *, delivery_id: str, partner_id: str, partner_key: PrivateKey, relay_key: str
) -> Delivery:
    try:
        doc = json.loads(record)
    except ValueError as exc:
        raise DeliveryRejected(delivery_id, "not a JSON record") from exc
    if not isinstance(doc, dict):
        raise DeliveryRejected(delivery_id, "not a JSON object")
    if "box" not in doc:
        if doc.get("type") in NOTICES.get(str(doc.get("source")), frozenset()):
            return Delivery(str(doc.get("id", delivery_id)), doc, sealed=False)
        raise DeliveryRejected(delivery_id, "not sealed, and not a notice")
    try:
        opened = open_delivery(
            record, partner_id=partner_id, partner_key=partner_key, relay_key=relay_key
        )
    except OpenError as exc:
        raise DeliveryRejected(delivery_id, str(exc)) from exc
    return Delivery(opened.delivery_id, opened.event)
