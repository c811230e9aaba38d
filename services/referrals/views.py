"""Referrals over HTTP: an agency makes and withdraws; the addressed partner acknowledges,
accepts or declines, completes or closes; anyone who may see a referral reads it, its history
and its FHIR Task; the survivor (or their advocate or guardian) sees the referrals about them.

Making one: the payload is a CloudEvent the agency signed (as for ``POST /v1/events``); Accord
asks the policy, with the relay's own input, what each candidate partner would receive. None:
the referral is recorded as refused with the rules (rule ids only) and nothing is published.
Else it goes to the first candidate that would receive something, through the relay like every
event, which decides again (the decision that counts): only that partner is asked, whoever else
subscribes to the type.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from services.atrest import store as atrest
from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.broker.pipeline.decide import PolicyUnavailable, parse_decision
from services.broker.pipeline.validate import SchemaRegistry, survivor_age
from services.consent import service as consent
from services.consent.schemas import PSEUDONYM
from services.consent.service import ConsentError
from services.events.provenance import verify_event
from services.openapi import errors
from services.referrals import events, fhir, service, states
from services.referrals.models import Referral
from services.referrals.publish import ReferralPublisher
from services.referrals.schemas import (
    REFERRAL_ID,
    ChangeOut,
    CodesOut,
    MoveIn,
    ReferralIn,
    ReferralOut,
    SurvivorReferralOut,
)
from services.referrals.service import Party, ReferralError
from services.referrals.states import Action, State
from services.registry import models as broker
from services.vocabulary import Purpose

log = logging.getLogger("accord.referrals")

router = APIRouter(prefix="/v1", tags=["referrals"])

Referrer = Annotated[Principal, Depends(require(Role.AGENCY))]
Mover = Annotated[Principal, Depends(require(Role.AGENCY, Role.SUPERVISOR, Role.PARTNER))]
Partner = Annotated[Principal, Depends(require(Role.PARTNER))]
Reader = Annotated[
    Principal,
    Depends(require(Role.AGENCY, Role.SUPERVISOR, Role.PARTNER, Role.COMPLIANCE)),
]
SurvivorSide = Annotated[Principal, Depends(require(Role.SURVIVOR, Role.ADVOCATE, Role.GUARDIAN))]
ReferralId = Annotated[str, Path(pattern=REFERRAL_ID, description="A referral id (ref-...)")]
FHIR_JSON = "application/fhir+json"
TASK_EXAMPLE: dict[str, Any] = {
    "resourceType": "Task",
    "id": "ref-0123456789abcdef01234567",
    "status": "rejected",
    "statusReason": {"coding": [{"system": fhir.REASON, "code": "no_capacity"}]},
    "intent": "order",
    "note": [{"text": "No bed until Friday."}],
}


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_JSON


# While the partner may still need to reach the survivor about the referral.
PARTNER_CONTACT_STATES = frozenset({"delivered", "acknowledged", "accepted"})
PartyAction = Literal["acknowledge", "accept", "decline", "complete", "close", "withdraw"]
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def _policies(request: Request) -> pathlib.Path:
    policies: pathlib.Path = request.app.state.settings.policies_dir
    return policies


def _sessions(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    return factory


async def _in_transaction(request: Request, work: Callable[[Session], T]) -> T:
    """``work`` in one transaction in the threadpool (never on the event loop)."""

    def run() -> T:
        with _sessions(request)() as session, session.begin():
            return work(session)

    try:
        return await run_in_threadpool(run)
    except (ReferralError, ConsentError) as exc:
        raise HTTPException(exc.status, detail=exc.message) from exc


async def _publish(request: Request) -> None:
    """The committed changes' CloudEvents; left for the background pass if Kafka is away."""
    publisher: ReferralPublisher = request.app.state.referral_publisher
    try:
        await publisher.publish_pending()
    except KafkaError:
        log.warning("referral changes not published yet; retried in the background")


def _history(r: Referral) -> list[ChangeOut]:
    return [
        ChangeOut(
            seq=c.seq,
            action=c.action,
            source=c.source,
            target=c.target,
            actor=c.actor,
            code=c.code,
            at=c.at,
        )
        for c in r.history
    ]


def out(session: Session, r: Referral, principal: Principal, policies: pathlib.Path) -> ReferralOut:
    """What ``principal`` sees: a partner not the referrer's side (rules of a refusal, a
    superseded referral, the note), the referring agency its partner's note."""
    referrer = principal.role in (Role.AGENCY, Role.SUPERVISOR, Role.COMPLIANCE)
    note = None
    if principal.role in (Role.AGENCY, Role.SUPERVISOR):
        note = service.open_note(session=session, r=r)
    contact = None
    if principal.role is Role.PARTNER and r.state in PARTNER_CONTACT_STATES:
        contact = service.contact_for_partner(session=session, r=r, policies=policies, now=_now())
    return ReferralOut(
        id=r.id,
        state=r.state,
        agency_id=r.agency_id,
        survivor_id=r.survivor_id,
        partner_id=r.partner_id,
        partner_type=r.partner_type,
        jurisdiction=r.jurisdiction,
        addressed_as=r.addressed_as,
        purpose=r.purpose,
        event_id=r.event_id,
        supersedes=r.supersedes if referrer else None,
        made_at=r.made_at,
        delivered_at=r.delivered_at,
        acknowledged_at=r.acknowledged_at,
        answered_at=r.answered_at,
        ended_at=r.ended_at,
        updated_at=r.updated_at,
        reason_code=r.reason_code,
        outcome_code=r.outcome_code,
        released=list(r.released),
        withheld=list(r.withheld) if referrer else [],
        refused_rules=list(r.refused_rules) if referrer else [],
        note=note,
        contact_preference=contact,
        history=_history(r),
    )


# --- making a referral ---------------------------------------------------------------------


@router.post(
    "/referrals",
    status_code=status.HTTP_201_CREATED,
    response_model=ReferralOut,
    responses={
        **errors(409, 410, 503),
        403: {"description": "Not an agency's key, or the event's source is another agency"},
        422: {
            "description": "Not a signed accord.referral.made event of yours, a mandated report "
            "(R5 reports are not referrals), or no partner to address"
        },
    },
)
async def make(
    request: Request, agency: Referrer, body: Annotated[ReferralIn, Body()]
) -> ReferralOut:
    """Refer a survivor to a partner (named, or the partner type of a jurisdiction) for a
    purpose. Answers 201 with the referral: ``made`` (on its way through the relay: it becomes
    ``delivered`` once the relay's decision is recorded), or ``refused`` with the rule ids
    that let nothing through (``refused_rules``), so an advocate can ask the survivor; a
    refused referral was sent to no one."""
    event = body.event
    if event.agency_id != agency.subject:
        raise HTTPException(
            403, detail=f"An agency refers as itself: source must be /agencies/{agency.subject}."
        )
    if event.type != events.PAYLOAD_TYPE:
        raise HTTPException(422, detail="A referral's event is of type accord.referral.made.")
    if body.purpose is Purpose.MANDATED_REPORT:
        raise HTTPException(
            422,
            detail="A mandated report is not a referral: the relay makes it under R5 "
            "(purpose mandated_report is refused here).",
        )
    schemas: SchemaRegistry = request.app.state.schemas
    problems = schemas.problems(event.type, event.data)
    if problems:
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["body", "event", "data", *path],
                    "msg": f"The event's data does not match its schema ({keyword}).",
                    "type": "schema",
                }
                for path, keyword in problems
            ],
        )
    raw_event: dict[str, Any] = json.loads(await request.body())["event"]  # as signed
    now = _now()
    to = body.to

    def prepare(session: Session) -> tuple[str, list[broker.Partner], list[dict[str, Any]]]:
        row = session.get(broker.Agency, agency.subject)
        if row is None or not verify_event(raw_event, row.public_key):
            raise ReferralError(
                422,
                "The event must carry your agency's signature (accordsignature) over its "
                "canonical JSON; it is missing or does not verify.",
            )
        how, partners = service.candidates(
            session=session,
            agency_id=agency.subject,
            survivor_id=event.subject,
            partner_id=to.partner_id,
            partner_type=to.partner_type.value if to.partner_type else None,
            jurisdiction=to.jurisdiction,
            supersedes=body.supersedes,
        )
        inputs = service.policy_inputs(
            session=session,
            agency_id=agency.subject,
            survivor_id=event.subject,
            event_type=event.type,
            fields=sorted(event.data),
            age=survivor_age(event.data, event.time),
            purpose=body.purpose.value,
            partners=partners,
            now=now,
        )
        return how, partners, inputs

    how, partners, inputs = await _in_transaction(request, prepare)
    try:
        raw = await request.app.state.policy.decide(inputs)
    except PolicyUnavailable as exc:
        raise HTTPException(503, detail="The policy service is unavailable; try again.") from exc
    decisions = [parse_decision(d, event_fields=sorted(event.data)) for d in raw]
    chosen = next((i for i, d in enumerate(decisions) if d.allow), 0)

    def record(session: Session) -> tuple[str, bytes | None]:
        partner = session.get(broker.Partner, partners[chosen].id)
        assert partner is not None
        r = service.make(
            session=session,
            agency_id=agency.subject,
            by=agency.subject,
            survivor_id=event.subject,
            partner=partner,
            addressed_as=how,
            purpose=body.purpose.value,
            event_id=event.id,
            supersedes=body.supersedes,
            decision=decisions[chosen],
            now=now,
        )
        if r.state != State.MADE:
            return r.id, None  # refused: nothing is published
        # Sealed to the survivor like every inbound event (docs/at-rest.md).
        sealed = atrest.seal_inbound(
            session,
            json.dumps(raw_event).encode(),
            agency_id=agency.subject,
            survivor_id=event.subject,
        )
        return r.id, sealed

    referral_id, sealed = await _in_transaction(request, record)
    if sealed is not None:
        try:
            await request.app.state.producer.send_and_wait(
                request.app.state.settings.topic_inbound, sealed, key=event.subject.encode()
            )
        except KafkaError as exc:
            await _in_transaction(
                request,
                lambda s: service.abandon(session=s, referral_id=referral_id, now=_now()),
            )
            await _publish(request)
            raise HTTPException(
                503, detail="The referral could not be sent (withdrawn: not_sent); retry."
            ) from exc
    await _publish(request)
    return await _read(request, referral_id, agency)


async def _read(request: Request, referral_id: str, principal: Principal) -> ReferralOut:
    def read(session: Session) -> ReferralOut:
        r = service.get(session=session, referral_id=referral_id, principal=principal)
        return out(session, r, principal, _policies(request))

    return await _in_transaction(request, read)


# --- reading -------------------------------------------------------------------------------


@router.get("/referrals/codes", response_model=CodesOut)
def codes(_: Reader) -> CodesOut:
    """The codes a decline, a completion, a closure and a withdrawal take."""
    return CodesOut(
        decline=list(states.DECLINE_REASONS),
        complete=list(states.COMPLETION_OUTCOMES),
        close=list(states.CLOSURE_REASONS),
        withdraw=list(states.WITHDRAWAL_REASONS),
    )


@router.get("/referrals", response_model=list[ReferralOut], responses=errors(503))
async def listing(
    request: Request,
    principal: Reader,
    state: Annotated[State | None, Query(description="Only referrals in this state")] = None,
    survivor: Annotated[str | None, Query(pattern=PSEUDONYM)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ReferralOut]:
    """Your referrals, newest first: an agency those it made, a partner those delivered to
    it (a light recipient polls this, e.g. ``?state=delivered``), compliance every one."""

    def read(session: Session) -> list[ReferralOut]:
        rows = service.listing(
            session=session,
            principal=principal,
            state=state.value if state else None,
            survivor_id=survivor,
            limit=limit,
        )
        return [out(session, r, principal, _policies(request)) for r in rows]

    return await _in_transaction(request, read)


@router.get("/referrals/{referral_id}", response_model=ReferralOut, responses=errors(404))
async def get(referral_id: ReferralId, request: Request, principal: Reader) -> ReferralOut:
    """One referral with its history."""
    return await _read(request, referral_id, principal)


@router.get(
    "/referrals/{referral_id}/fhir",
    response_class=FhirJSONResponse,
    responses={
        **errors(404),
        200: {
            "content": {FHIR_JSON: {"schema": {"type": "object"}}},
            "description": "A FHIR R4 Bundle: the Task and its ServiceRequest",
        },
    },
)
async def export_fhir(
    referral_id: ReferralId, request: Request, principal: Reader
) -> dict[str, Any]:
    """The referral as a FHIR R4 Task with its ServiceRequest (Gravity SDOH shapes),
    validated: ids, codes and times only."""

    def read(session: Session) -> dict[str, Any]:
        return fhir.bundle(
            service.get(session=session, referral_id=referral_id, principal=principal)
        )

    return await _in_transaction(request, read)


# --- moving --------------------------------------------------------------------------------


async def _move(
    request: Request,
    referral_id: str,
    action: Action,
    principal: Principal,
    code: str | None,
    note: str | None,
) -> ReferralOut:
    try:
        party = Party.of(principal)
    except ReferralError as exc:
        raise HTTPException(exc.status, detail=exc.message) from exc

    def work(session: Session) -> ReferralOut:
        r = service.move(
            session=session,
            referral_id=referral_id,
            action=action,
            party=party,
            code=code,
            note=note,
            now=_now(),
        )
        return out(session, r, principal, _policies(request))

    result = await _in_transaction(request, work)
    await _publish(request)
    return result


@router.post(
    "/referrals/{referral_id}/{action}",
    response_model=ReferralOut,
    responses={
        **errors(404, 410),
        409: {"description": "Not a move from the referral's state (the transition is named)"},
    },
)
async def move(
    referral_id: ReferralId,
    action: Annotated[PartyAction, Path(description="The move")],
    request: Request,
    principal: Mover,
    body: Annotated[
        MoveIn | None,
        Body(examples=[{"code": "no_capacity", "note": "Full until Friday."}, {}]),
    ] = None,
) -> ReferralOut:
    """Move a referral. The addressed partner: ``acknowledge`` (delivered → acknowledged),
    ``accept`` or ``decline`` (acknowledged → accepted | declined; a decline takes a reason
    code and optional ``note`` that only the referring agency reads, never shared onward),
    ``complete`` (accepted → completed, an outcome code) or ``close`` (accepted → closed, a
    reason code). The referring agency: ``withdraw`` (any open state). Any other move answers
    409 naming the transition; a referral you may not see answers 404."""
    given = body or MoveIn()
    return await _move(request, referral_id, Action(action), principal, given.code, given.note)


@router.put(
    "/referrals/{referral_id}/fhir",
    response_model=ReferralOut,
    responses={
        **errors(404, 410),
        409: {"description": "Not a move from the referral's state (the transition is named)"},
    },
)
async def import_fhir(
    referral_id: ReferralId,
    request: Request,
    partner: Partner,
    task: Annotated[
        dict[str, Any],
        Body(
            media_type=FHIR_JSON,
            description="The referral's FHIR R4 Task, its status changed",
            examples=[TASK_EXAMPLE],
        ),
    ],
) -> ReferralOut:
    """A partner system answers with the Task (``received``, ``accepted``, ``rejected`` with a
    ``statusReason``, ``completed`` with an ``output``, ``failed``): the status is the move."""

    def work(session: Session) -> ReferralOut:
        r = service.get(session=session, referral_id=referral_id, principal=partner)
        try:
            asked = fhir.imported_move(task, r)
        except fhir.FhirError as exc:
            raise ReferralError(422, exc.message) from exc
        if asked is not None:
            action, code, note = asked
            r = service.move(
                session=session,
                referral_id=referral_id,
                action=action,
                party=Party.of(partner),
                code=code,
                note=note,
                now=_now(),
            )
        return out(session, r, partner, _policies(request))

    result = await _in_transaction(request, work)
    await _publish(request)
    return result


# --- the survivor's side -------------------------------------------------------------------


def survivor_view(r: Referral) -> SurvivorReferralOut:
    return SurvivorReferralOut(
        id=r.id,
        state=r.state,
        partner_id=r.partner_id,
        partner_type=r.partner_type,
        purpose=r.purpose,
        made_at=r.made_at,
        sent=list(r.released),
        refused_rules=list(r.refused_rules),
        history=_history(r),
    )


@router.get("/survivors/{survivor_id}/referrals", response_model=list[SurvivorReferralOut])
async def for_survivor(
    survivor_id: str, request: Request, actor: SurvivorSide
) -> list[SurvivorReferralOut]:
    """Every referral about the survivor: to whom, what was sent (field names), its state and
    each step (R14; the disclosures view lists them too)."""

    def read(session: Session) -> list[SurvivorReferralOut]:
        consent.access(session=session, principal=actor, survivor_id=survivor_id)
        return [
            survivor_view(r) for r in service.for_survivor(session=session, survivor_id=survivor_id)
        ]

    return await _in_transaction(request, read)
