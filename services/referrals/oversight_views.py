"""Oversight of referrals: deadline breaches as alerts (the referring agency's supervisors see
theirs, compliance all) and compliance's referral figures (R15-suppressed).

A breach is written once by the deadline worker (``deadline_worker.py``); a supervisor marks it
seen. Nothing here moves the referral: the supervisor acts through the referral's own routes
(withdraw and re-refer, for instance to the proposed partner).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.audit import reports as audit_reports
from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.deps import SessionDep
from services.openapi import errors
from services.referrals import reports
from services.referrals.models import Referral, ReferralBreach

router = APIRouter(prefix="/v1/referral-oversight", tags=["referrals"])

Watcher = Annotated[Principal, Depends(require(Role.SUPERVISOR, Role.COMPLIANCE))]
Supervisor = Annotated[Principal, Depends(require(Role.SUPERVISOR))]


class AlertOut(BaseModel):
    id: int
    referral_id: str
    kind: Literal["acknowledge", "answer", "expire"]
    agency_id: str
    partner_id: str
    partner_type: str
    jurisdiction: str
    due_at: datetime
    fired_at: datetime
    proposed_partner_id: str | None
    seen_at: datetime | None


def _out(b: ReferralBreach) -> AlertOut:
    return AlertOut(
        id=b.id,
        referral_id=b.referral_id,
        kind=b.kind,
        agency_id=b.agency_id,
        partner_id=b.partner_id,
        partner_type=b.partner_type,
        jurisdiction=b.jurisdiction,
        due_at=b.due_at,
        fired_at=b.fired_at,
        proposed_partner_id=b.proposed_partner_id,
        seen_at=b.seen_at,
    )


@router.get("/alerts", responses=errors(403))
def list_alerts(
    principal: Watcher,
    db: SessionDep,
    unseen: Annotated[bool, Query(description="Only alerts no supervisor marked seen.")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlertOut]:
    """Deadline breaches of referrals, newest first: a supervisor's own agency's, or every
    agency's for compliance. Each names the deadline (acknowledge, answer, expire), when it fell
    due, and the next eligible partner of the same type where the policy proposes one."""
    q = select(ReferralBreach).order_by(ReferralBreach.fired_at.desc(), ReferralBreach.id.desc())
    if principal.role is Role.SUPERVISOR:
        q = q.where(ReferralBreach.agency_id == principal.agency_id)
    if unseen:
        q = q.where(ReferralBreach.seen_at.is_(None))
    return [_out(b) for b in db.scalars(q.limit(limit))]


@router.post("/alerts/{alert_id}/seen", responses=errors(403, 404))
def mark_seen(alert_id: int, principal: Supervisor, db: SessionDep) -> AlertOut:
    """Mark an alert of your agency seen (the first supervisor to do so is recorded)."""
    b = db.get(ReferralBreach, alert_id, with_for_update=True)
    if b is None or b.agency_id != principal.agency_id:
        raise HTTPException(404, detail="No such alert (or not one of your agency's).")
    if b.seen_at is None:
        b.seen_at = datetime.now(UTC)
        b.seen_by = principal.subject
    out = _out(b)
    db.commit()
    return out


Compliance = Annotated[Principal, Depends(require(Role.COMPLIANCE))]


def report_of(db: Session, policies: Path) -> reports.ReferralReport:
    """The referral figures over every referral the relay delivered (R15-suppressed)."""
    delivered = [
        reports.Delivered(r.partner_type, r.jurisdiction, r.delivered_at, r.acknowledged_at)
        for r in db.scalars(select(Referral).where(Referral.delivered_at.is_not(None)))
        if r.delivered_at is not None
    ]
    breaches = [
        reports.Breach(b.partner_type, b.jurisdiction, b.kind)
        for b in db.scalars(select(ReferralBreach))
    ]
    return reports.referral_report(delivered, breaches, audit_reports.threshold(policies))


@router.get("/report", responses=errors(403), response_model=reports.ReferralReport)
def referral_report(_: Compliance, request: Request, db: SessionDep) -> reports.ReferralReport:
    """Per partner type and jurisdiction: referrals delivered and acknowledged, the median
    hours to acknowledge, and breaches of each deadline; a count below the threshold is
    suppressed (null), and so is a median over fewer acknowledgements (R15)."""
    return report_of(db, request.app.state.settings.policies_dir)
