"""Each referral about a survivor as an entry of their accounting of disclosures (R14): to
whom, what was sent, its state. The API passes ``referral_disclosures`` to the consent
service's ``AuditDisclosureLog`` (``more=``). Field names and categories only, never values.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.consent.disclosures import Categorize, DisclosureOut
from services.referrals.events import PAYLOAD_TYPE
from services.referrals.models import Referral
from services.referrals.service import for_survivor


def referral_disclosure(r: Referral, categorize: Categorize) -> DisclosureOut:
    return DisclosureOut(
        kind="referral",
        at=r.made_at,
        event_id=r.event_id,
        event_type=PAYLOAD_TYPE,
        partner_id=r.partner_id,
        partner_type=r.partner_type,
        purpose=r.purpose,
        categories=sorted({c for f in r.released if (c := categorize(PAYLOAD_TYPE, f))}),
        fields=list(r.released),
        basis=[],
        consents=[],
        referral_id=r.id,
        referral_state=r.state,
    )


def referral_disclosures(
    session: Session, survivor_id: str, categorize: Categorize
) -> list[DisclosureOut]:
    return [
        referral_disclosure(r, categorize)
        for r in for_survivor(session=session, survivor_id=survivor_id)
    ]
