"""Values of the relay's pipeline for the unit tests: a fixed ``NOW``, an inbound event and a
recipient partner."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nacl.public import PrivateKey

from services.broker.pipeline import seal
from services.broker.pipeline.model import Agreement, InboundEvent, Recipient

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def make_event(**data: Any) -> InboundEvent:
    return InboundEvent(
        id="evt-1",
        type="accord.referral.made",
        agency_id="harbor-outreach",
        survivor_id="sv-1",
        time=NOW,
        data=data or {"survivor_name": "X", "age": 30, "hiv_status": "positive"},
        survivor_age=30,
    )


def make_recipient(partner_id: str = "shelter-1", partner_type: str = "shelter") -> Recipient:
    return Recipient(
        partner_id=partner_id,
        partner_type=partner_type,
        purpose="service_referral",
        jurisdiction="state-a",
        status="active",
        vetted=True,
        immigration_enforcement=False,
        training_attested_until=datetime(2030, 1, 1, tzinfo=UTC),
        agreements=(
            Agreement(
                "mou-1",
                ("service_referral",),
                ("identity",),
                datetime(2026, 1, 1, tzinfo=UTC),
                datetime(2030, 1, 1, tzinfo=UTC),
            ),
        ),
        public_key=seal.public_key_of(PrivateKey.generate()),
    )
