"""Consent API: survivors (or an advocate with them, or a guardian for a minor) grant, narrow,
preview and revoke consent, and see every disclosure about them (R14).

Every change is acknowledged only after the relay's topic holds it (R3).
"""

from __future__ import annotations

import logging
import pathlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request, status
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.broker.pipeline.decide import PolicyUnavailable, build_input, parse_decision
from services.broker.pipeline.model import InboundEvent, SurvivorFacts
from services.broker.registry import recipient_of
from services.consent import models, service
from services.consent.disclosures import DisclosureLog, DisclosureOut
from services.consent.notices import send_revocation_notices
from services.consent.schemas import PSEUDONYM, Consent, ConsentIn, RecordedBy
from services.consent.service import ConsentError
from services.consent.time_limits import TimeLimits, time_limited
from services.deps import Now, Sessions
from services.openapi import errors
from services.policy_data import ConsentLimits, consent_limits
from services.registry import models as registry_models
from services.vocabulary import Purpose

log = logging.getLogger("accord.consent")

router = APIRouter(prefix="/v1", tags=["consent"])

Actor = Annotated[Principal, Depends(require(Role.SURVIVOR, Role.ADVOCATE, Role.GUARDIAN))]
Advocate = Annotated[Principal, Depends(require(Role.ADVOCATE))]
ENROLLMENT_TTL = timedelta(minutes=15)
NOT_A_CONDITION = (
    "Consent is never a condition of service (VAWA, FVPSA, VOCA): refusing, narrowing or "
    "revoking a consent, or letting one end, never affects the services the survivor receives. "
    "A consent is time-limited: each permit ends within its jurisdiction's maximum duration "
    "(a longer or open-ended period is capped, and the answer shows the end), and the advocate "
    "is asked to renew it before it ends (docs/safe-contact.md)."
)


def say_consent_is_not_a_condition(router: APIRouter) -> None:
    """Append NOT_A_CONDITION to the description of every consent route of ``router``."""
    for route in router.routes:
        if isinstance(route, APIRoute) and "/consents" in route.path:
            route.description = f"{route.description}\n\n{NOT_A_CONDITION}".strip()


# --- survivors, guardians, enrollment --------------------------------------------------------


class SurvivorIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"survivor_id": "sv-7f3a9c"}]})
    survivor_id: str = Field(pattern=PSEUDONYM, description="Pseudonymous id, never a name.")


class SurvivorOut(BaseModel):
    id: str
    agency_id: str


@router.post("/survivors", status_code=201, response_model=SurvivorOut, responses=errors(409))
def register_survivor(
    sessions: Sessions, now: Now, body: SurvivorIn, request: Request, advocate: Advocate
) -> SurvivorOut:
    """An advocate registers a survivor of their agency (by pseudonym)."""
    assert advocate.agency_id is not None
    with sessions() as session, session.begin():
        s = service.register_survivor(
            session=session,
            survivor_id=body.survivor_id,
            agency_id=advocate.agency_id,
            now=now,
        )
        return SurvivorOut(id=s.id, agency_id=s.agency_id)


class GuardianIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"guardian_id": "gd-41b2", "relation": "aunt", "suspect": False}]
        }
    )
    guardian_id: str = Field(pattern=PSEUDONYM)
    relation: str = Field(min_length=1, max_length=64)
    suspect: bool = False


# An unknown survivor answers 403 as another agency's does (service.access): no 404 here.
@router.put("/survivors/{survivor_id}/guardians", status_code=204, responses=errors(410, 503))
async def record_guardian(
    sessions: Sessions, survivor_id: str, body: GuardianIn, request: Request, advocate: Advocate
) -> None:
    """Record a guardian of a minor; ``suspect`` bars them from everything and voids the
    consents they recorded (R5), from the moment this answers."""

    def save() -> None:  # blocking: in the threadpool, never on the event loop
        with sessions() as session, session.begin():
            survivor = service.access(session=session, principal=advocate, survivor_id=survivor_id)
            service.record_guardian(
                session=session,
                survivor=survivor,
                guardian_id=body.guardian_id,
                relation=body.relation,
                suspect=body.suspect,
            )

    await run_in_threadpool(save)
    await publish_snapshot(request, survivor_id)


class EnrollmentIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "survivor"}]})
    role: Literal["survivor", "guardian"] = "survivor"
    guardian_id: str | None = Field(default=None, pattern=PSEUDONYM)


class EnrollmentOut(BaseModel):
    code: str
    expires_at: datetime


@router.post("/survivors/{survivor_id}/enrollment-codes", status_code=201)
def issue_code(
    sessions: Sessions,
    now: Now,
    survivor_id: str,
    body: EnrollmentIn,
    request: Request,
    advocate: Advocate,
) -> EnrollmentOut:
    """A single-use code, valid 15 minutes, that the survivor (or guardian) exchanges for a key."""
    with sessions() as session, session.begin():
        survivor = service.access(session=session, principal=advocate, survivor_id=survivor_id)
        if body.role == "guardian":
            link = body.guardian_id and service.guardianship(session, body.guardian_id, survivor_id)
            if not link or link.suspect:
                raise ConsentError(
                    422, "Record this guardian first; a suspect guardian gets no code."
                )
            role, subject = Role.GUARDIAN, body.guardian_id
        else:
            role, subject = Role.SURVIVOR, survivor_id
        assert subject is not None
        code = service.issue_enrollment_code(
            session=session,
            survivor=survivor,
            role=role,
            subject=subject,
            issued_by=advocate.subject,
            now=now,
            ttl=ENROLLMENT_TTL,
        )
    return EnrollmentOut(code=code, expires_at=now + ENROLLMENT_TTL)


class EnrollIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"code": "3f9a1c2e-Xk4mQ8rT2vLp9sWz"}]}
    )
    code: str = Field(min_length=3, max_length=64)


class EnrollOut(BaseModel):
    api_key: str
    role: str


@router.post(
    "/enroll",
    response_model=EnrollOut,
    responses={401: {"description": "The code is wrong, used or expired"}},
)
def enroll(sessions: Sessions, now: Now, body: EnrollIn, request: Request) -> EnrollOut:
    """Exchange an enrollment code (the credential for this call) for an API key."""
    with sessions() as session, session.begin():
        key, role = service.redeem_enrollment_code(session=session, code=body.code, now=now)
    return EnrollOut(api_key=key, role=role)


# --- consents -----------------------------------------------------------------------------


def _check_partners(session: Session, data: ConsentIn) -> None:
    unknown = [
        f"provisions[{i}].recipients.partners[{j}]"
        for i, prov in enumerate(data.provisions)
        for j, p in enumerate(prov.recipients.partners)
        if session.get(registry_models.Partner, p) is None
    ]
    if unknown:  # where, never the id sent: it may be a name
        raise ConsentError(422, f"No registered partner at {', '.join(unknown)}.")


class Snapshots(Protocol):
    """The survivors' snapshots for the relay (``services/snapshot/``, above the consent and
    legal services; the API puts one in ``app.state.snapshots``)."""

    async def publish(self, survivor_id: str) -> None: ...

    def facts(self, *, session: Session, survivor: models.Survivor) -> SurvivorFacts: ...


async def publish_snapshot(request: Request, survivor_id: str) -> None:
    snapshots: Snapshots = request.app.state.snapshots
    try:
        await snapshots.publish(survivor_id)
    except KafkaError as exc:
        log.error("consent snapshot not published", extra={"survivor_id": survivor_id})
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="Your change is saved but not yet in effect; it will be applied shortly. "
            "Until you see it confirmed, treat the previous consent as still in force.",
        ) from exc


def time_limits(request: Request) -> TimeLimits:
    """The consent limits' policy data and the renewal hook the API was made with."""
    limits: TimeLimits = request.app.state.consent_time_limits
    return limits


def _limits(policies_dir: pathlib.Path, session: Session, survivor: Any) -> ConsentLimits:
    """The consent limits of the survivor's agency's jurisdiction (R12)."""
    agency = session.get(registry_models.Agency, survivor.agency_id)
    jurisdiction = agency.jurisdiction if agency is not None else ""
    return consent_limits(policies_dir, jurisdiction)


def change(
    sessions: sessionmaker[Session],
    now: datetime,
    principal: Principal,
    survivor_id: str,
    body: ConsentIn | None,
    op: Literal["grant", "amend", "revoke"],
    consent_id: str = "",
    *,
    limits: TimeLimits,
) -> Consent:
    with sessions() as session, session.begin():
        survivor = service.access(session=session, principal=principal, survivor_id=survivor_id)
        by: RecordedBy = service.recorded_by(
            session=session, principal=principal, survivor_id=survivor_id
        )
        if body is not None:
            _check_partners(session, body)
            maximum = _limits(limits.policies_dir, session, survivor)
            body = time_limited(body, now=now, limits=maximum)  # capped, docs/safe-contact.md
            if op == "grant":
                made = service.grant(session=session, survivor=survivor, data=body, by=by, now=now)
            else:
                made = service.amend(
                    session=session,
                    survivor=survivor,
                    consent_id=consent_id,
                    data=body,
                    by=by,
                    now=now,
                )
            limits.on_made(session, made, now=now, limits=maximum)
            return made
        return service.revoke(
            session=session, survivor=survivor, consent_id=consent_id, by=by, now=now
        )


@router.get("/survivors/{survivor_id}/consents", response_model=list[Consent])
def list_consents(
    sessions: Sessions, now: Now, survivor_id: str, request: Request, actor: Actor
) -> list[Consent]:
    """The survivor's consents, each at its latest version, with its status now (active,
    expired or revoked)."""
    with sessions() as session:
        service.access(session=session, principal=actor, survivor_id=survivor_id)
        return service.current_consents(session=session, survivor_id=survivor_id, now=now)


@router.post(
    "/survivors/{survivor_id}/consents",
    status_code=201,
    response_model=Consent,
    responses=errors(410, 503),
)
async def grant(
    sessions: Sessions, now: Now, survivor_id: str, body: ConsentIn, request: Request, actor: Actor
) -> Consent:
    """Grant a consent. Acknowledged once the relay's topic holds it."""
    consent = await run_in_threadpool(
        change, sessions, now, actor, survivor_id, body, "grant", limits=time_limits(request)
    )
    await publish_snapshot(request, survivor_id)
    return consent


@router.put(
    "/survivors/{survivor_id}/consents/{consent_id}",
    response_model=Consent,
    responses={**errors(404, 410, 503), 409: {"description": "The consent was revoked"}},
)
async def amend(
    sessions: Sessions,
    now: Now,
    survivor_id: str,
    consent_id: str,
    body: ConsentIn,
    request: Request,
    actor: Actor,
) -> Consent:
    """Replace the provisions (narrow or widen): a new version; the old one stays readable."""
    consent = await run_in_threadpool(
        change,
        sessions,
        now,
        actor,
        survivor_id,
        body,
        "amend",
        consent_id,
        limits=time_limits(request),
    )
    await publish_snapshot(request, survivor_id)
    return consent


@router.post(
    "/survivors/{survivor_id}/consents/{consent_id}/revoke",
    response_model=Consent,
    responses={**errors(404, 503), 409: {"description": "Already revoked"}},
)
async def revoke(
    sessions: Sessions, now: Now, survivor_id: str, consent_id: str, request: Request, actor: Actor
) -> Consent:
    """Revoke. Once this answers, no event the relay processes afterwards uses this consent (R3);
    partners that received data under it are sent a ``consent.revoked`` notice."""
    consent = await run_in_threadpool(
        change,
        sessions,
        now,
        actor,
        survivor_id,
        None,
        "revoke",
        consent_id,
        limits=time_limits(request),
    )
    await publish_snapshot(request, survivor_id)
    try:
        await send_revocation_notices(request.app.state, consent)
    except TimeoutError as exc:
        log.error("revocation notices not sent: the audit sink is behind")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="The consent is revoked and in effect, but the partners that received data "
            "under it could not be told yet (the audit log is behind). Operators: check that "
            "`accord sink` runs.",
        ) from exc
    return consent


@router.get(
    "/survivors/{survivor_id}/consents/{consent_id}/versions",
    response_model=list[Consent],
    responses=errors(404),
)
def history(
    sessions: Sessions, now: Now, survivor_id: str, consent_id: str, request: Request, actor: Actor
) -> list[Consent]:
    """Every version of one consent, oldest first (an amendment adds one; none is erased)."""
    with sessions() as session:
        service.access(session=session, principal=actor, survivor_id=survivor_id)
        last = service.latest(session=session, survivor_id=survivor_id, consent_id=consent_id)
        return [
            service.version(
                session=session,
                survivor_id=survivor_id,
                consent_id=consent_id,
                number=n,
                now=now,
            )
            for n in range(1, last.version + 1)
        ]


@router.get(
    "/survivors/{survivor_id}/consents/{consent_id}/versions/{number}",
    response_model=Consent,
    responses=errors(404),
)
def read_version(
    sessions: Sessions,
    now: Now,
    survivor_id: str,
    consent_id: str,
    number: Annotated[int, Path(ge=1, le=2**31 - 1)],
    request: Request,
    actor: Actor,
) -> Consent:
    """One version of a consent, as it was recorded."""
    with sessions() as session:
        service.access(session=session, principal=actor, survivor_id=survivor_id)
        return service.version(
            session=session,
            survivor_id=survivor_id,
            consent_id=consent_id,
            number=number,
            now=now,
        )


# --- preview and disclosures ------------------------------------------------------------------


class PreviewIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "partner_id": "lighthouse-shelter",
                    "event_type": "accord.referral.made",
                    "fields": ["survivor_name", "phone", "service_needs", "hiv_status"],
                    "age": 34,
                }
            ]
        }
    )
    partner_id: str
    event_type: str = Field(description="Event type; a sample event of it is used if no fields.")
    fields: list[str] | None = Field(default=None, description="Field names; default: all.")
    purpose: Purpose | None = Field(
        default=None, description="Default: the partner's subscription."
    )
    age: int | None = Field(default=None, ge=0, lt=130)
    draft: ConsentIn | None = Field(default=None, description="Try a consent before granting it.")


class PreviewOut(BaseModel):
    partner_id: str
    purpose: str
    released: list[str]
    withheld: list[dict[str, Any]]
    basis: list[str]
    reasons: list[str]
    policy_revision: str


@router.post("/survivors/{survivor_id}/preview", response_model=PreviewOut, responses=errors(503))
async def preview(
    sessions: Sessions,
    now: Now,
    survivor_id: str,
    request: Request,
    actor: Actor,
    body: Annotated[PreviewIn, Body()],
) -> PreviewOut:
    """What would this partner receive of such an event under my consents right now?

    Answered by the real policy with the same input the relay would build.
    """
    schemas = request.app.state.schemas
    if not schemas.known(body.event_type):
        raise HTTPException(422, detail="Unknown event type (event_type).")
    declared = schemas.fields(body.event_type)
    fields = body.fields if body.fields is not None else declared
    unknown = [f"fields[{i}]" for i, name in enumerate(fields) if name not in declared]
    if unknown:  # where, never the name sent: the answer lists the fields it judged
        raise HTTPException(422, detail=f"Not a field of this event type: {', '.join(unknown)}.")
    snapshots: Snapshots = request.app.state.snapshots

    def read() -> tuple[Any, ...]:  # blocking: in the threadpool, never on the event loop
        with sessions() as session:
            survivor = service.access(session=session, principal=actor, survivor_id=survivor_id)
            partner = session.get(registry_models.Partner, body.partner_id)
            agency = session.get(registry_models.Agency, survivor.agency_id)
            if partner is None or agency is None:
                raise ConsentError(422, "Unknown partner (partner_id).")
            purpose = body.purpose or next(
                (s.purpose for s in partner.subscriptions if body.event_type in s.event_types),
                None,
            )
            if purpose is None:
                raise ConsentError(
                    422, "Say which purpose: the partner has no subscription to this event type."
                )
            facts = snapshots.facts(session=session, survivor=survivor)
            if body.draft is not None:
                _check_partners(session, body.draft)
                by = service.recorded_by(session=session, principal=actor, survivor_id=survivor_id)
                draft = {
                    "id": "draft",
                    "version": 0,
                    "status": "active",
                    "recorded_by": {
                        **by.model_dump(mode="json", exclude={"relation"}),
                        "suspect": False,
                    },
                    "provisions": [p.model_dump(mode="json") for p in body.draft.provisions],
                }
                facts = replace(facts, consents=(*facts.consents, draft))
            return survivor, partner, agency, purpose, facts, recipient_of(partner, purpose)

    survivor, partner, agency, purpose, facts, recipient = await run_in_threadpool(read)
    event = InboundEvent(
        id="preview",
        type=body.event_type,
        agency_id=survivor.agency_id,
        survivor_id=survivor_id,
        time=now,
        data=dict.fromkeys(fields),
        survivor_age=body.age,
    )
    item = build_input(event, recipient, jurisdiction=agency.jurisdiction, facts=facts, now=now)
    try:
        raw = await request.app.state.policy.decide([item])
    except PolicyUnavailable as exc:
        raise HTTPException(503, detail="The policy service is unavailable; try again.") from exc
    d = parse_decision(raw[0], event_fields=fields)
    return PreviewOut(
        partner_id=partner.id,
        purpose=purpose,
        released=list(d.fields),
        withheld=[{"field": w.field, "rules": list(w.rules)} for w in d.withheld],
        basis=list(d.basis),
        reasons=list(d.reasons),
        policy_revision=d.policy_revision,
    )


@router.get(
    "/survivors/{survivor_id}/disclosures",
    response_model=list[DisclosureOut],
)
def disclosures(
    sessions: Sessions, survivor_id: str, request: Request, actor: Actor
) -> list[DisclosureOut]:
    """Every release of data about the survivor, and every notice sent about it (R14)."""
    with sessions() as session:
        service.access(session=session, principal=actor, survivor_id=survivor_id)
    disclosure_log: DisclosureLog = request.app.state.disclosures
    return disclosure_log.for_survivor(survivor_id)


say_consent_is_not_a_condition(router)
