"""What a referral tells the survivor, through the one gate of safe contact
(services/contact/gate.py): never a notice the survivor's preference forbids ("do not
contact", outside the safe times), and never one about a referral that ended meanwhile.

A partner that accepted a referral will contact the survivor: the survivor is told first
(``referral.accepted``, ids only: the referral and the partner), through their agency.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from services.contact import gate
from services.contact.models import SurvivorNotice
from services.referrals.models import Referral
from services.referrals.states import State


def referral_accepted(session: Session, r: Referral, now: datetime) -> None:
    """In the transaction of the acceptance: one notice per referral."""
    gate.enqueue(
        session,
        survivor_id=r.survivor_id,
        type=gate.NoticeType.REFERRAL_ACCEPTED,
        dedupe_key=f"referral:{r.id}:accepted",
        about={"referral_id": r.id, "partner_id": r.partner_id},
        now=now,
    )


@gate.still_applies(gate.NoticeType.REFERRAL_ACCEPTED)
def _still_accepted(session: Session, notice: SurvivorNotice, now: datetime) -> bool:
    """Only while the referral is accepted (a withdrawn or closed one needs no call)."""
    r = session.get(Referral, str(notice.about.get("referral_id")))
    return r is not None and r.state == State.ACCEPTED.value
