"""Admin API: the partner registry (agencies, partners, agreements, subscriptions).

Every route needs the ``admin`` role. Input is checked against the same vocabulary and policy
data OPA decides with (``policies/accord/*/data.json``) and the event schemas the relay
validates with, so a registration the policy could never match is refused with a 422 that
names the field. A change applies from the next event on: the relay takes a fresh
``SqlRegistry`` snapshot for every batch (``relay.py``). Creating a partner also creates its
topic, so that its first delivery has somewhere to go.

Nothing here is secret: the keys stored are public keys; API keys live in ``services/auth``
and are never part of a response.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import cache
from pathlib import Path as FsPath
from typing import Annotated, Any, Protocol

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.deps import Sessions
from services.kafka import topics
from services.kafka.client import API, kafka
from services.registry import models
from services.registry.schemas import (
    ID,
    AgencyBody,
    AgencyOut,
    AgreementIn,
    AgreementOut,
    PartnerBody,
    PartnerIn,
    PartnerOut,
    PartnerPatch,
    SubscriptionBody,
    SubscriptionIn,
    SubscriptionOut,
)
from services.registry.service import upsert_partner
from services.settings import Settings

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
ItemId = Annotated[str, Path(pattern=ID, description="Lower-case letters, digits and dashes.")]
KEY_BYTES = 32

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The key is not an admin's"},
}


# --- checks ----------------------------------------------------------------------------------


@cache
def _policy_json(path: FsPath) -> Any:
    return json.loads(path.read_text())


def _vocabulary(policies: FsPath) -> dict[str, Any]:
    doc: dict[str, Any] = _policy_json(policies / "accord" / "vocabulary" / "data.json")
    return doc


def _jurisdictions(policies: FsPath) -> frozenset[str]:
    doc = _policy_json(policies / "accord" / "jurisdictions" / "data.json")
    return frozenset(doc["overrides"])


class Problems:
    """Collects 422 errors in the shape of the API's validation errors (where, never what)."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, loc: list[str | int], msg: str, kind: str) -> None:
        self.errors.append({"loc": ["body", *map(str, loc)], "msg": msg, "type": kind})

    def word(self, loc: list[str | int], value: str, known: frozenset[str], what: str) -> None:
        if value not in known:
            kind = "unknown_" + what.replace(" ", "_")
            self.add(loc, f"unknown {what}; known: {', '.join(sorted(known))}", kind)

    def words(
        self, loc: list[str | int], values: list[str], known: frozenset[str], what: str
    ) -> None:
        for i, value in enumerate(values):
            self.word([*loc, i], value, known, what)

    def raise_if_any(self) -> None:
        if self.errors:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=self.errors)


def _check_key(problems: Problems, loc: list[str | int], key: str | None, *, curve: bool) -> None:
    if key is None:
        return
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        problems.add(loc, "not valid base64", "bad_key")
        return
    if len(raw) != KEY_BYTES:
        problems.add(loc, f"a key is {KEY_BYTES} bytes; this one has {len(raw)}", "bad_key")
        return
    if curve:
        try:  # the relay must be able to seal to it: refuse low-order points now
            Box(PrivateKey.generate(), PublicKey(raw))
        except CryptoError:
            problems.add(loc, "not a usable Curve25519 public key", "bad_key")


class EventTypes(Protocol):
    """The event schemas the relay validates with (``app.state.schemas``)."""

    def known(self, event_type: str) -> bool: ...


class Checker:
    def __init__(self, request: Request) -> None:
        s: Settings = request.app.state.settings
        vocab = _vocabulary(s.policies_dir)
        self.types = frozenset(vocab["partner_types"])
        self.purposes = frozenset(vocab["purposes"])
        self.categories = frozenset(vocab["categories"])
        self.jurisdictions = _jurisdictions(s.policies_dir)
        self.schemas: EventTypes = request.app.state.schemas

    def subscription(self, p: Problems, loc: list[str | int], sub: SubscriptionBody) -> None:
        p.word([*loc, "purpose"], sub.purpose, self.purposes, "purpose")
        for i, event_type in enumerate(sub.event_types):
            if not self.schemas.known(event_type):
                p.add([*loc, "event_types", i], "unknown event type", "unknown_event_type")

    def partner(self, body: PartnerBody) -> None:
        p = Problems()
        p.word(["type"], body.type, self.types, "partner type")
        p.word(["jurisdiction"], body.jurisdiction, self.jurisdictions, "jurisdiction")
        _check_key(p, ["public_key"], body.public_key, curve=True)
        for i, a in enumerate(body.agreements):
            p.words(["agreements", i, "purposes"], a.purposes, self.purposes, "purpose")
            p.words(["agreements", i, "categories"], a.categories, self.categories, "category")
            if a.valid_until <= a.valid_from:
                p.add(["agreements", i, "valid_until"], "must be after valid_from", "bad_period")
        if len({a.id for a in body.agreements}) != len(body.agreements):
            p.add(["agreements"], "agreement ids must be unique", "duplicate_id")
        for sub_id, sub in (body.subscriptions or {}).items():
            if not _valid_id(sub_id):
                p.add(["subscriptions", sub_id], f"ids must match {ID}", "bad_id")
            self.subscription(p, ["subscriptions", sub_id], sub)
        p.raise_if_any()

    def agency(self, body: AgencyBody) -> None:
        p = Problems()
        p.word(["jurisdiction"], body.jurisdiction, self.jurisdictions, "jurisdiction")
        _check_key(p, ["public_key"], body.public_key, curve=False)
        p.raise_if_any()


def _valid_id(value: str) -> bool:
    return re.fullmatch(ID, value) is not None


def _taken(
    session: Session,
    model: type[models.Agreement] | type[models.Subscription],
    ids: list[str],
    partner_id: str,
) -> list[str]:
    """Ids (global in their table) already used by another partner."""
    if not ids:
        return []
    rows = session.execute(select(model.id, model.partner_id).where(model.id.in_(ids)))
    return sorted(row_id for row_id, owner in rows if owner != partner_id)


def _conflict(what: str, ids: list[str]) -> HTTPException:
    # How many, never which: the answer repeats nothing the request carried.
    return HTTPException(
        status.HTTP_409_CONFLICT,
        detail=f"{len(ids)} {what.lower()} id(s) of the request belong to another partner "
        "(these ids are global); choose other ids.",
    )


def _partner_out(row: models.Partner, s: Settings) -> PartnerOut:
    return PartnerOut(
        id=row.id,
        name=row.name,
        type=row.type,
        jurisdiction=row.jurisdiction,
        status=row.status,
        vetted=row.vetted,
        immigration_enforcement=row.immigration_enforcement,
        training_attested_until=row.training_attested_until,
        public_key=row.public_key,
        topic=s.partner_topic(row.id),
        agreements=[
            AgreementOut(
                id=a.id,
                purposes=list(a.purposes),
                categories=list(a.categories),
                valid_from=a.valid_from,
                valid_until=a.valid_until,
            )
            for a in sorted(row.agreements, key=lambda a: a.id)
        ],
        subscriptions=[
            SubscriptionOut(id=x.id, event_types=list(x.event_types), purpose=x.purpose)
            for x in sorted(row.subscriptions, key=lambda x: x.id)
        ],
    )


def _agency_out(row: models.Agency) -> AgencyOut:
    return AgencyOut(
        id=row.id, name=row.name, jurisdiction=row.jurisdiction, public_key=row.public_key
    )


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"No such {what}.")


async def _ensure_topic(request: Request, partner_id: str) -> None:
    s: Settings = request.app.state.settings
    try:
        await topics.ensure_topics(kafka(s, API), topics.partner_topics(s, [partner_id]))
    except KafkaError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="The partner's topic could not be created; nothing was changed. Retry.",
        ) from exc


# --- agencies --------------------------------------------------------------------------------


@router.put(
    "/agencies/{agency_id}",
    response_model=AgencyOut,
    summary="Register or replace an agency",
    responses={
        **AUTH_RESPONSES,
        201: {"description": "Created", "model": AgencyOut},
        422: {"description": "Bad input"},
    },
)
def put_agency(
    sessions: Sessions,
    agency_id: ItemId,
    body: AgencyBody,
    request: Request,
    response: Response,
    _: Admin,
) -> AgencyOut:
    """Create the agency (201) or replace its name, jurisdiction and signing key (200).
    Give it its Kafka principal afterwards with `accord kafka provision`."""
    Checker(request).agency(body)
    with sessions() as session, session.begin():
        row = session.get(models.Agency, agency_id)
        if row is None:
            row = models.Agency(id=agency_id)
            response.status_code = status.HTTP_201_CREATED
        row.name, row.jurisdiction, row.public_key = body.name, body.jurisdiction, body.public_key
        session.add(row)
        return _agency_out(row)


@router.get("/agencies", response_model=list[AgencyOut], responses=AUTH_RESPONSES)
def list_agencies(sessions: Sessions, request: Request, _: Admin) -> list[AgencyOut]:
    """Every registered agency, by id."""
    with sessions() as session:
        rows = session.scalars(select(models.Agency).order_by(models.Agency.id))
        return [_agency_out(r) for r in rows]


@router.get(
    "/agencies/{agency_id}",
    response_model=AgencyOut,
    responses={**AUTH_RESPONSES, 404: {"description": "No such agency"}},
)
def get_agency(sessions: Sessions, agency_id: ItemId, request: Request, _: Admin) -> AgencyOut:
    """One agency."""
    with sessions() as session:
        row = session.get(models.Agency, agency_id)
        if row is None:
            raise _not_found("agency")
        return _agency_out(row)


# --- partners --------------------------------------------------------------------------------


@router.put(
    "/partners/{partner_id}",
    response_model=PartnerOut,
    summary="Register or replace a partner (its agreements; subscriptions if given)",
    responses={
        **AUTH_RESPONSES,
        201: {"description": "Created, with its topic", "model": PartnerOut},
        409: {"description": "An agreement or subscription id belongs to another partner"},
        422: {
            "description": "Unknown type, purpose, category, event type or jurisdiction; "
            "bad key; an agreement ending before it starts"
        },
        503: {"description": "Kafka unavailable; nothing was changed"},
    },
)
async def put_partner(
    sessions: Sessions,
    partner_id: ItemId,
    body: PartnerBody,
    request: Request,
    response: Response,
    _: Admin,
) -> PartnerOut:
    """Create the partner (201, with its Kafka topic) or replace it (200). Agreement and
    subscription ids are global: one already used by another partner is a 409. Give the
    partner its Kafka principal afterwards with `accord kafka provision`."""
    Checker(request).partner(body)
    await _ensure_topic(request, partner_id)
    # Async only for Kafka: the database work runs in the threadpool, never on the loop.
    return await run_in_threadpool(_save_partner, sessions, partner_id, body, request, response)


def _save_partner(
    sessions: sessionmaker[Session],
    partner_id: str,
    body: PartnerBody,
    request: Request,
    response: Response,
) -> PartnerOut:
    s: Settings = request.app.state.settings
    with sessions() as session, session.begin():
        existing = session.get(models.Partner, partner_id)
        agreement_ids = [a.id for a in body.agreements]
        if taken := _taken(session, models.Agreement, agreement_ids, partner_id):
            raise _conflict("Agreement", taken)
        if body.subscriptions is None:
            subs = [
                SubscriptionIn(id=x.id, event_types=list(x.event_types), purpose=x.purpose)
                for x in (existing.subscriptions if existing else [])
            ]
        else:
            subs = [SubscriptionIn(id=k, **v.model_dump()) for k, v in body.subscriptions.items()]
            if taken := _taken(session, models.Subscription, [x.id for x in subs], partner_id):
                raise _conflict("Subscription", taken)
        fields = body.model_dump(exclude={"agreements", "subscriptions"})
        partner = PartnerIn(
            id=partner_id,
            **fields,
            agreements=[AgreementIn(**a.model_dump()) for a in body.agreements],
            subscriptions=subs,
        )
        row = upsert_partner(session=session, partner=partner)
        session.flush()
        if existing is None:
            response.status_code = status.HTTP_201_CREATED
        return _partner_out(row, s)


@router.get("/partners", response_model=list[PartnerOut], responses=AUTH_RESPONSES)
def list_partners(sessions: Sessions, request: Request, _: Admin) -> list[PartnerOut]:
    """Every registered partner, by id, with its agreements and subscriptions."""
    s: Settings = request.app.state.settings
    with sessions() as session:
        rows = session.scalars(select(models.Partner).order_by(models.Partner.id))
        return [_partner_out(r, s) for r in rows]


@router.get(
    "/partners/{partner_id}",
    response_model=PartnerOut,
    responses={**AUTH_RESPONSES, 404: {"description": "No such partner"}},
)
def get_partner(sessions: Sessions, partner_id: ItemId, request: Request, _: Admin) -> PartnerOut:
    """One partner, with its agreements and subscriptions."""
    with sessions() as session:
        row = session.get(models.Partner, partner_id)
        if row is None:
            raise _not_found("partner")
        return _partner_out(row, request.app.state.settings)


@router.patch(
    "/partners/{partner_id}",
    response_model=PartnerOut,
    summary="Change a partner's status (suspend, reactivate), vetting, training or key",
    responses={
        **AUTH_RESPONSES,
        404: {"description": "No such partner"},
        422: {"description": "Bad input"},
    },
)
def patch_partner(
    sessions: Sessions, partner_id: ItemId, body: PartnerPatch, request: Request, _: Admin
) -> PartnerOut:
    """Change only the fields given; a suspended partner receives nothing from the next
    event on (cut its Kafka access too: `accord kafka revoke`)."""
    p = Problems()
    _check_key(p, ["public_key"], body.public_key, curve=True)
    p.raise_if_any()
    with sessions() as session, session.begin():
        row = session.get(models.Partner, partner_id)
        if row is None:
            raise _not_found("partner")
        for name, value in body.model_dump(exclude_unset=True).items():
            if value is None and name in ("status", "vetted"):
                continue  # explicit null means "leave as is" for non-nullable fields
            setattr(row, name, value)
        return _partner_out(row, request.app.state.settings)


# --- subscriptions ---------------------------------------------------------------------------


@router.put(
    "/partners/{partner_id}/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    summary="Subscribe a partner to event types for a purpose (or replace the subscription)",
    responses={
        **AUTH_RESPONSES,
        201: {"description": "Created", "model": SubscriptionOut},
        404: {"description": "No such partner"},
        409: {"description": "The id belongs to another partner's subscription"},
        422: {"description": "Unknown purpose or event type"},
    },
)
def put_subscription(
    sessions: Sessions,
    partner_id: ItemId,
    subscription_id: ItemId,
    body: SubscriptionBody,
    request: Request,
    response: Response,
    _: Admin,
) -> SubscriptionOut:
    """Create (201) or replace (200) one subscription of the partner."""
    p = Problems()
    Checker(request).subscription(p, [], body)
    p.raise_if_any()
    with sessions() as session, session.begin():
        if session.get(models.Partner, partner_id) is None:
            raise _not_found("partner")
        row = session.get(models.Subscription, subscription_id)
        if row is not None and row.partner_id != partner_id:
            raise _conflict("Subscription", [subscription_id])
        if row is None:
            row = models.Subscription(id=subscription_id, partner_id=partner_id)
            response.status_code = status.HTTP_201_CREATED
        row.event_types, row.purpose = list(body.event_types), body.purpose
        session.add(row)
        return SubscriptionOut(id=row.id, event_types=row.event_types, purpose=row.purpose)


@router.delete(
    "/partners/{partner_id}/subscriptions/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**AUTH_RESPONSES, 404: {"description": "No such partner or subscription"}},
)
def delete_subscription(
    sessions: Sessions, partner_id: ItemId, subscription_id: ItemId, request: Request, _: Admin
) -> None:
    """Remove one subscription: the partner receives no more events under it."""
    with sessions() as session, session.begin():
        row = session.get(models.Subscription, subscription_id)
        if row is None or row.partner_id != partner_id:
            raise _not_found("subscription")
        session.delete(row)
