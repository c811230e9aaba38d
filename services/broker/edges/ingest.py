"""HTTP ingest: an agency POSTs a CloudEvent; it is checked, sealed to its survivor and
written to the inbound topic.

The same checks run again in the relay (agencies may also publish with a Kafka producer,
sealing with the key ``GET /v1/events/keys/{survivor_id}`` gives them); here they give the
agency an immediate, plain-language answer.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from services.atrest import sealed, store
from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.broker.pipeline.validate import SchemaRegistry
from services.deps import Sessions
from services.events.cloudevents import ID_PATTERN, CloudEvent
from services.events.provenance import verify_event
from services.registry.models import Agency

router = APIRouter(prefix="/v1/events", tags=["ingest"])

AgencyPrincipal = Annotated[Principal, Depends(require(Role.AGENCY))]


class Accepted(BaseModel):
    id: str
    status: str = "accepted"


class EventKey(BaseModel):
    survivor_id: str
    format: str = sealed.EVENT
    generation: int
    public_key: str  # X25519, base64


SurvivorId = Annotated[str, Path(pattern=ID_PATTERN, description="Pseudonymous survivor id")]


@router.get(
    "/keys/{survivor_id}",
    response_model=EventKey,
    summary="The key to seal events about one survivor before publishing them to Kafka",
    description="Events on the inbound topic are sealed to their survivor "
    "(HPKE: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM; format `ib1`, see "
    "docs/at-rest.md). Seal with the key of the highest generation. After a survivor's data "
    "was erased there is no key any more (410): events about them are not accepted, and "
    "events sealed to the erased key are dropped with a dead letter that says so.",
    responses={
        401: {"description": "Missing or invalid API key"},
        403: {"description": "Not an agency's key"},
        410: {"description": "The survivor's data was erased: no event about them is accepted"},
    },
)
def event_key(
    sessions: Sessions, survivor_id: SurvivorId, request: Request, _: AgencyPrincipal
) -> EventKey:
    with sessions() as session:
        generation, key = store.survivor_public_key(session, survivor_id)
        session.commit()
    return EventKey(
        survivor_id=survivor_id,
        generation=generation,
        public_key=base64.b64encode(key).decode(),
    )


def _agency_key(sessions: sessionmaker[Session], agency_id: str) -> str | None:
    with sessions() as session:
        agency = session.get(Agency, agency_id)
        return agency.public_key if agency is not None else None


def _sealed(sessions: sessionmaker[Session], raw: bytes, agency_id: str, survivor_id: str) -> bytes:
    """The event sealed to its survivor (the data key may be created: a transaction)."""
    with sessions() as session:
        record = store.seal_inbound(session, raw, agency_id=agency_id, survivor_id=survivor_id)
        session.commit()
    return record


# The handler is async (it awaits Kafka); its database work runs in the threadpool.
@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Publish a case event (CloudEvents 1.0, structured JSON)",
    responses={
        401: {"description": "Missing or invalid API key"},
        403: {"description": "The key is not an agency's, or the event's source is another agency"},
        410: {"description": "The survivor's data was erased: no event about them is accepted"},
        413: {"description": "Event larger than the configured limit"},
        422: {
            "description": "Not a valid CloudEvent, not signed by the agency, unknown type, "
            "or data not matching its schema"
        },
        503: {"description": "Kafka unavailable; nothing was accepted, retry later"},
    },
)
async def publish(
    sessions: Sessions, event: CloudEvent, request: Request, principal: AgencyPrincipal
) -> Accepted:
    """Accept one event signed by the calling agency (`accordsignature`, Ed25519 over its
    canonical JSON), about one survivor (`subject`), whose `data` matches its type's schema.
    202 once Kafka holds it; the relay then decides, per partner, what is delivered."""
    if event.agency_id != principal.subject:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="An agency can only publish as itself: "
            f"source must be /agencies/{principal.subject}.",
        )
    agency_key = await run_in_threadpool(_agency_key, sessions, principal.subject)
    raw = await request.body()
    # Forward exactly the signed bytes: re-serialising would change what was signed.
    if not verify_event(json.loads(raw), agency_key):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="The event must carry your agency's signature (accordsignature) over "
            "its canonical JSON; it is missing or does not verify.",
        )
    schemas: SchemaRegistry = request.app.state.schemas
    if not schemas.known(event.type):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="Unknown event type (type)."
        )
    problems = schemas.problems(event.type, event.data)
    if problems:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", "data", *path],
                    "msg": f"The event's data does not match its schema ({keyword}).",
                    "type": "schema",
                }
                for path, keyword in problems
            ],
        )
    record = await run_in_threadpool(_sealed, sessions, raw, principal.subject, event.subject)
    producer: AIOKafkaProducer = request.app.state.producer
    try:
        await producer.send_and_wait(
            request.app.state.settings.topic_inbound, record, key=event.subject.encode()
        )
    except KafkaError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="The event could not be stored; nothing was accepted. Please retry.",
        ) from exc
    return Accepted(id=event.id)
