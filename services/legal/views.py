"""Imminent-danger declarations (R8) and court orders (R9), for authorised agency staff.

Each takes effect like a consent change: acknowledged once the relay's topic holds the
survivor's new snapshot. Each is queued for compliance review.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.consent.schemas import PSEUDONYM
from services.consent.views import publish_snapshot
from services.deps import Now, Sessions
from services.errors import DomainError
from services.legal import service
from services.legal.models import CourtOrder, Declaration
from services.legal.schemas import CourtOrderIn, CourtOrderOut, DeclarationIn, DeclarationOut
from services.openapi import errors
from services.registry import models as registry_models

router = APIRouter(prefix="/v1/survivors/{survivor_id}", tags=["legal bases"])

Supervisor = Annotated[Principal, Depends(require(Role.SUPERVISOR))]
T = TypeVar("T")


def _declaration(d: Declaration) -> DeclarationOut:
    return DeclarationOut(
        id=d.id,
        survivor_id=d.survivor_id,
        agency_id=d.agency_id,
        declared_at=d.declared_at,
        ended_at=d.ended_at,
        tell_survivor=d.tell_survivor,
    )


def _order(session: Session, o: CourtOrder) -> CourtOrderOut:
    reference, court = service.order_identity(session, o)
    return CourtOrderOut(
        id=o.id,
        survivor_id=o.survivor_id,
        reference=reference,
        court=court,
        recipient=o.recipient,
        fields=o.fields,
        expires_at=o.expires_at,
    )


def _check(survivor_id: str) -> None:
    if not re.fullmatch(PSEUDONYM, survivor_id):
        raise HTTPException(422, detail="The survivor id is not a valid pseudonym.")


async def _saved_then_published(
    sessions: sessionmaker[Session],
    request: Request,
    survivor_id: str,
    save: Callable[[Session], T],
) -> T:
    """``save`` in one transaction in the threadpool (never on the event loop), then the
    survivor's snapshot published: the change is acknowledged once the relay's topic holds it."""

    def run() -> T:
        with sessions() as session, session.begin():
            return save(session)

    out = await run_in_threadpool(run)
    await publish_snapshot(request, survivor_id)
    return out


@router.post(
    "/declarations", status_code=201, response_model=DeclarationOut, responses=errors(410, 503)
)
async def declare(
    sessions: Sessions,
    now: Now,
    survivor_id: str,
    body: DeclarationIn,
    request: Request,
    staff: Supervisor,
) -> DeclarationOut:
    """Declare a serious and imminent threat (R8). For the jurisdiction's duration, emergency
    services and law enforcement of the event's jurisdiction (and of neighbouring ones it
    names) receive the emergency field set. Compliance reviews it."""
    _check(survivor_id)
    agency_id = staff.agency_id
    assert agency_id is not None

    def save(session: Session) -> DeclarationOut:
        row = service.declare(
            session=session,
            survivor_id=survivor_id,
            agency_id=agency_id,
            by=staff.subject,
            data=body,
            now=now,
        )
        return _declaration(row)

    return await _saved_then_published(sessions, request, survivor_id, save)


@router.post(
    "/declarations/{declaration_id}/end",
    response_model=DeclarationOut,
    responses={
        **errors(503),
        404: {"description": "No such declaration by your agency for this survivor"},
        409: {"description": "Already ended"},
    },
)
async def end_declaration(
    sessions: Sessions,
    now: Now,
    survivor_id: str,
    declaration_id: str,
    request: Request,
    staff: Supervisor,
) -> DeclarationOut:
    """End a declaration before its duration runs out."""
    agency_id = staff.agency_id
    assert agency_id is not None

    def save(session: Session) -> DeclarationOut:
        row = service.end_declaration(
            session=session,
            survivor_id=survivor_id,
            declaration_id=declaration_id,
            agency_id=agency_id,
            by=staff.subject,
            now=now,
        )
        return _declaration(row)

    return await _saved_then_published(sessions, request, survivor_id, save)


@router.post(
    "/court-orders", status_code=201, response_model=CourtOrderOut, responses=errors(410, 503)
)
async def record_court_order(
    sessions: Sessions,
    now: Now,
    survivor_id: str,
    body: CourtOrderIn,
    request: Request,
    staff: Supervisor,
) -> CourtOrderOut:
    """Record a court order (R9): exactly the fields it names go to the partner it names,
    until it expires. Compliance reviews it."""
    _check(survivor_id)
    agency_id = staff.agency_id
    assert agency_id is not None

    def save(session: Session) -> CourtOrderOut:
        if session.get(registry_models.Partner, body.recipient) is None:
            raise DomainError(422, "Unknown partner (recipient).")
        row = service.record_court_order(
            session=session,
            survivor_id=survivor_id,
            agency_id=agency_id,
            by=staff.subject,
            data=body,
            now=now,
        )
        return _order(session, row)

    return await _saved_then_published(sessions, request, survivor_id, save)
