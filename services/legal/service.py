"""Record, end and list legal bases; every record is queued for compliance review (R8, R9).

Justifications and a court order's reference and court are stored sealed with the survivor's
data key (services/atrest), never logged or published: the relay's snapshot carries only what
the policy needs (ids, agency, times, recipient, field names): data minimisation.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.atrest import store as atrest
from services.audit import record as audit
from services.consent import models as consent_models
from services.consent.service import bump
from services.contact.gate import NoticeType, enqueue
from services.errors import DomainError
from services.legal import models
from services.legal.schemas import CourtOrderIn, DeclarationIn

# Sealed with the survivor's data key (services/atrest), bound to these purposes and the row id.
JUSTIFICATION_D = "declarations.justification"
JUSTIFICATION_O = "court_orders.justification"
REFERENCE = "court_orders.reference"
COURT = "court_orders.court"


def justification(session: Session, row: models.Declaration | models.CourtOrder) -> str | None:
    """The justification in clear, for whoever needs it (no API serves it today); None when
    erased with the survivor's data key."""
    purpose = JUSTIFICATION_D if isinstance(row, models.Declaration) else JUSTIFICATION_O
    return atrest.open_text(
        session, row.justification, survivor_id=row.survivor_id, purpose=purpose, row=row.id
    )


def order_identity(session: Session, row: models.CourtOrder) -> tuple[str | None, str | None]:
    """The order's reference and court in clear; None each when erased with the survivor's
    data key."""

    def clear(token: str, purpose: str) -> str | None:
        return atrest.open_text(
            session, token, survivor_id=row.survivor_id, purpose=purpose, row=row.id
        )

    return clear(row.reference, REFERENCE), clear(row.court, COURT)


def _survivor(session: Session, survivor_id: str, agency_id: str, now: datetime) -> Any:
    survivor = session.get(consent_models.Survivor, survivor_id, with_for_update=True)
    if survivor is None:  # declared by an agency before anyone enrolled the survivor
        survivor = consent_models.Survivor(id=survivor_id, agency_id=agency_id, created_at=now)
        session.add(survivor)
        session.flush()
    return survivor


def _queue(
    session: Session, kind: str, ref_id: str, agency: str, survivor: str, now: datetime
) -> None:
    session.add(
        models.ReviewItem(
            kind=kind, ref_id=ref_id, agency_id=agency, survivor_id=survivor, created_at=now
        )
    )


def declare(
    *,
    session: Session,
    survivor_id: str,
    agency_id: str,
    by: str,
    data: DeclarationIn,
    now: datetime,
) -> models.Declaration:
    survivor = _survivor(session, survivor_id, agency_id, now)
    row = models.Declaration(
        id=f"decl-{uuid.uuid4().hex[:16]}",
        survivor_id=survivor_id,
        agency_id=agency_id,
        declared_by=by,
        tell_survivor=data.tell_survivor,
        declared_at=now,
    )
    row.justification = atrest.seal_text(
        session, data.justification, survivor_id=survivor_id, purpose=JUSTIFICATION_D, row=row.id
    )
    session.add(row)
    _queue(session, "imminent_danger", row.id, agency_id, survivor_id, now)
    if data.tell_survivor:
        session.add(
            consent_models.Disclosure(
                survivor_id=survivor_id,
                kind="imminent_danger_declared",
                event_id=row.id,
                event_type="",
                partner_id="",
                partner_type="",
                purpose="emergency_response",
                fields=[],
                basis=["imminent_danger"],
                consents=[],
                at=now,
            )
        )
        # Telling the survivor is a notice to them: it goes through the gate (safe contact).
        enqueue(
            session,
            survivor_id=survivor_id,
            type=NoticeType.IMMINENT_DANGER_DECLARED,
            dedupe_key=f"declaration:{row.id}",
            about={"declaration_id": row.id},
            now=now,
        )
    bump(session, survivor)
    audit.declaration(session, row, "declared", now)
    return row


def end_declaration(
    *,
    session: Session,
    survivor_id: str,
    declaration_id: str,
    agency_id: str,
    by: str,
    now: datetime,
) -> models.Declaration:
    row = session.get(models.Declaration, declaration_id)
    if row is None or row.survivor_id != survivor_id or row.agency_id != agency_id:
        raise DomainError(404, "No such declaration by your agency for this survivor.")
    if row.ended_at is not None:
        raise DomainError(409, "This declaration has already ended.")
    row.ended_at, row.ended_by = now, by
    bump(session, _survivor(session, survivor_id, agency_id, now))
    audit.declaration(session, row, "ended", now)
    return row


def record_court_order(
    *,
    session: Session,
    survivor_id: str,
    agency_id: str,
    by: str,
    data: CourtOrderIn,
    now: datetime,
) -> models.CourtOrder:
    if data.expires_at <= now:
        raise DomainError(422, "The order has already expired.")
    survivor = _survivor(session, survivor_id, agency_id, now)
    row = models.CourtOrder(
        id=f"order-{uuid.uuid4().hex[:16]}",
        survivor_id=survivor_id,
        agency_id=agency_id,
        recipient=data.recipient,
        fields=sorted(set(data.fields)),
        expires_at=data.expires_at,
        recorded_by=by,
        recorded_at=now,
    )

    def seal(text: str, purpose: str) -> str:
        return atrest.seal_text(session, text, survivor_id=survivor_id, purpose=purpose, row=row.id)

    row.reference, row.court = seal(data.reference, REFERENCE), seal(data.court, COURT)
    row.justification = seal(data.justification, JUSTIFICATION_O)
    session.add(row)
    _queue(session, "court_order", row.id, agency_id, survivor_id, now)
    bump(session, survivor)
    audit.court_order(session, row)
    return row


def _ts(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def policy_view(*, session: Session, survivor_id: str) -> dict[str, list[dict[str, Any]]]:
    """Declarations and court orders as the policy reads them; the policy judges time (R8).

    Published to the relay's topic: nothing sealed goes in (no reference, court or
    justification): the policy needs none of it.
    """
    declarations = session.scalars(
        select(models.Declaration)
        .where(models.Declaration.survivor_id == survivor_id)
        .order_by(models.Declaration.declared_at)
    )
    orders = session.scalars(
        select(models.CourtOrder)
        .where(models.CourtOrder.survivor_id == survivor_id)
        .order_by(models.CourtOrder.recorded_at)
    )
    return {
        "declarations": [
            {
                "id": d.id,
                "kind": "imminent_danger",
                "agency": d.agency_id,
                "declared_at": _ts(d.declared_at),
                "ended_at": _ts(d.ended_at),
            }
            for d in declarations
        ],
        "court_orders": [
            {
                "id": o.id,
                "recipient": o.recipient,
                "fields": list(o.fields),
                "expires_at": _ts(o.expires_at),
            }
            for o in orders
        ],
    }
