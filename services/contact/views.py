"""Safe-contact API: the survivor (or their agency's advocate, or a guardian of a minor who is
not a suspect, as for consents) records whether and how they may be contacted, and sees every
notice the gate decided about them; advocates list the notices their agency is to deliver.

A preference is sealed at rest and never logged; error answers never repeat it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.consent import models as consent_models
from services.consent import service as consents
from services.consent.service import ConsentError
from services.contact import models, service
from services.contact.gate import Status
from services.contact.schemas import Channel, ContactPreferenceIn, ContactPreferenceOut, NoticeOut
from services.openapi import errors

router = APIRouter(prefix="/v1", tags=["safe contact"])

Actor = Annotated[Principal, Depends(require(Role.SURVIVOR, Role.ADVOCATE, Role.GUARDIAN))]
Advocate = Annotated[Principal, Depends(require(Role.ADVOCATE))]


def _sessions(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    return factory


def _fail(exc: ConsentError) -> HTTPException:
    return HTTPException(exc.status, detail=exc.message)


def _notice(n: models.SurvivorNotice) -> NoticeOut:
    return NoticeOut(
        id=n.id,
        survivor_id=n.survivor_id,
        type=n.type,
        status=n.status,
        channel=Channel(n.channel) if n.channel else None,
        due_at=n.due_at,
        created_at=n.created_at,
        decided_at=n.decided_at,
        reason=n.reason,
    )


@router.put(
    "/survivors/{survivor_id}/contact-preference",
    response_model=ContactPreferenceOut,
    responses=errors(410),
)
async def put_preference(
    survivor_id: str, body: ContactPreferenceIn, request: Request, actor: Actor
) -> ContactPreferenceOut:
    """Record whether and how the survivor may be contacted (replacing any earlier one): safe
    channels, safe times in a time zone, "do not contact", a code word. Every notice Accord
    sends, or asks anyone to send, to the survivor honours it from the moment this answers."""

    def save() -> ContactPreferenceOut:
        with _sessions(request)() as session, session.begin():
            consents.access(session=session, principal=actor, survivor_id=survivor_id)
            return service.save(
                session=session,
                survivor_id=survivor_id,
                data=body,
                by=actor.subject,
                now=datetime.now(UTC),
            )

    try:
        return await run_in_threadpool(save)
    except ConsentError as exc:
        raise _fail(exc) from exc


@router.get(
    "/survivors/{survivor_id}/contact-preference",
    response_model=ContactPreferenceOut,
    responses=errors(404),
)
def get_preference(survivor_id: str, request: Request, actor: Actor) -> ContactPreferenceOut:
    """The survivor's safe-contact preference (404 if none is recorded, or it was erased)."""
    try:
        with _sessions(request)() as session:
            consents.access(session=session, principal=actor, survivor_id=survivor_id)
            found = service.load(session=session, survivor_id=survivor_id)
    except ConsentError as exc:
        raise _fail(exc) from exc
    if found is None:
        raise HTTPException(404, detail="No contact preference is recorded for this survivor.")
    return found


@router.get("/survivors/{survivor_id}/notices", response_model=list[NoticeOut])
def survivor_notices(survivor_id: str, request: Request, actor: Actor) -> list[NoticeOut]:
    """Every notice to (or about reaching) the survivor and what the gate did with it: sent on
    which channel, held until a safe time, or suppressed. No content, ids only."""
    try:
        with _sessions(request)() as session:
            consents.access(session=session, principal=actor, survivor_id=survivor_id)
            rows = session.scalars(
                select(models.SurvivorNotice)
                .where(models.SurvivorNotice.survivor_id == survivor_id)
                .order_by(models.SurvivorNotice.created_at, models.SurvivorNotice.id)
            )
            return [_notice(n) for n in rows]
    except ConsentError as exc:
        raise _fail(exc) from exc


@router.get("/notices", response_model=list[NoticeOut])
def agency_notices(
    request: Request,
    advocate: Advocate,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[NoticeOut]:
    """The notices the gate let through for survivors of the advocate's agency, newest first:
    each to be delivered on its ``channel`` (read the survivor's preference for the code word).
    A suppressed or held notice is never listed here."""
    with _sessions(request)() as session:
        rows = session.scalars(
            select(models.SurvivorNotice)
            .join(
                consent_models.Survivor,
                consent_models.Survivor.id == models.SurvivorNotice.survivor_id,
            )
            .where(
                consent_models.Survivor.agency_id == advocate.agency_id,
                models.SurvivorNotice.status == Status.SENT.value,
            )
            .order_by(models.SurvivorNotice.decided_at.desc(), models.SurvivorNotice.id)
            .limit(limit)
        )
        return [_notice(n) for n in rows]
