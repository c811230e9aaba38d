"""Time-limited consent (VAWA, FVPSA, VOCA: informed, written, reasonably time-limited).

Each jurisdiction sets the longest a consent may last and how long before its end the
advocate is asked to renew it (``consent_duration`` in policies/accord/jurisdictions/data.json,
read through ``services.policy_data.consent_limits``). When a consent is granted or amended:

- every ``permit`` provision is **capped**: one without an end, or ending later than
  ``max(start, now) + max_days``, ends then instead (what is stored and answered is the capped
  period, so the survivor sees the real end). A ``deny`` is never capped: a refusal does not
  expire;
- a ``consent.renewal_due`` notice is put in the survivor-notice outbox for
  ``end - renewal_notice_days`` (``end``: the latest end of its permits), once per consent and
  end. It leaves through the notice gate like every notice (a survivor with "do not contact"
  is not to be reached, so it is suppressed), and is withdrawn if, when it falls due, the
  consent was revoked, amended to another end, or has ended.

Refusing or letting a consent end never affects the services a survivor receives.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from services.consent import service as consents
from services.consent.schemas import Consent
from services.consent.service import ConsentError
from services.consent.time_limits import ends_at
from services.contact import models
from services.contact.gate import NoticeType, enqueue, still_applies
from services.policy_data import ConsentLimits


def schedule_renewal(
    session: Session, consent: Consent, *, now: datetime, limits: ConsentLimits
) -> models.SurvivorNotice | None:
    """The renewal notice of this consent version, in the caller's transaction."""
    end = ends_at(consent)
    if end is None or end <= now:
        return None
    return enqueue(
        session,
        survivor_id=consent.survivor_id,
        type=NoticeType.CONSENT_RENEWAL,
        dedupe_key=f"renewal:{consent.id}:{end.isoformat()}",
        about={"consent_id": consent.id, "version": consent.version, "ends_at": end.isoformat()},
        now=now,
        due_at=max(now, end - limits.renewal_notice),
    )


@still_applies(NoticeType.CONSENT_RENEWAL)
def renewal_applies(session: Session, notice: models.SurvivorNotice, now: datetime) -> bool:
    """The consent is still active, still ends when the notice was scheduled for, not yet."""
    try:
        row = consents.latest(
            session=session,
            survivor_id=notice.survivor_id,
            consent_id=str(notice.about["consent_id"]),
        )
        current = consents.version(
            session=session,
            survivor_id=notice.survivor_id,
            consent_id=row.consent_id,
            number=row.version,
            now=now,
            evidence=False,  # the terms decide; the evidence stays sealed
        )
    except ConsentError:
        return False
    end = ends_at(current)
    return (
        current.status == "active"
        and end is not None
        and end.isoformat() == notice.about["ends_at"]
        and now < end
    )
