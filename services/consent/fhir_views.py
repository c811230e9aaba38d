"""FHIR R4 Consent import and export of a survivor's consents (docs/fhir-consent-mapping.md).

The same roles and access rules as the consent API (``views.py``): the survivor, an advocate of
their agency, or a guardian recorded for the minor. An import is a grant: it goes through the
same service function, is recorded as made by the caller, and is acknowledged only once the
relay's topic holds it (R3). A resource Accord cannot honour is refused whole, with every
problem named by its path: nothing is stored.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from services.consent import service
from services.consent.fhir import FhirRefused, from_fhir, to_fhir
from services.consent.schemas import Consent, ConsentIn
from services.consent.views import (
    Actor,
    change,
    publish_snapshot,
    say_consent_is_not_a_condition,
    time_limits,
)
from services.deps import Now, Sessions
from services.openapi import errors
from services.registry import models as registry_models

router = APIRouter(prefix="/v1", tags=["consent", "fhir"])

FHIR_JSON = "application/fhir+json"
_FHIR_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}, "description": "FHIR R4 Consent"}
}
_REFUSED: dict[int | str, dict[str, Any]] = {
    422: {"description": "Refused: `detail` lists every problem with its JSON path."},
    403: {"description": "Not this caller's survivor, or the wrong role."},
}


_CODES = "https://accord.example/fhir/CodeSystem"
_EXAMPLE: dict[str, Any] = {
    "resourceType": "Consent",
    "status": "active",
    "scope": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                "code": "patient-privacy",
            }
        ]
    },
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    "patient": {"reference": "Patient/sv-7f3a9c"},
    "policyRule": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
    },
    "provision": {
        "type": "permit",
        "period": {"start": "2026-03-01T00:00:00Z"},
        "actor": [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                        }
                    ]
                },
                "reference": {
                    "type": "Organization",
                    "identifier": {"system": f"{_CODES}/partner-type", "value": "shelter"},
                },
            }
        ],
        "action": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                        "code": "disclose",
                    }
                ]
            }
        ],
        "purpose": [{"system": f"{_CODES}/purpose", "code": "service_referral"}],
        "class": [
            {"system": f"{_CODES}/data-category", "code": "identity"},
            {"system": f"{_CODES}/data-category", "code": "contact"},
        ],
    },
    "sourceAttachment": {"title": "signed release, intake 2026-03-01"},
}


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_JSON


def _problems(refused: list[str]) -> list[dict[str, Any]]:
    """Each ``<JSON path>: <what is wrong>`` as the API's problem shape."""
    out: list[dict[str, Any]] = []
    for problem in refused:
        path, _, why = problem.partition(": ")
        out.append({"loc": ["body", path], "msg": why, "type": "fhir"})
    return out


def _exported(consent: Consent, status_code: int = 200) -> FhirJSONResponse:
    return FhirJSONResponse(to_fhir(consent, consent.survivor_id), status_code=status_code)


@router.get(
    "/survivors/{survivor_id}/consents/{consent_id}/fhir",
    response_class=FhirJSONResponse,
    responses={**_FHIR_RESPONSE, 403: _REFUSED[403], 404: {"description": "No such consent"}},
    summary="Export a consent as a FHIR R4 Consent",
    description="The consent's latest version (or `version`) as a FHIR R4 `Consent` resource "
    "(`application/fhir+json`). The survivor appears only as `Patient/<pseudonym>`. "
    "Revoked and expired consents are exported with status `inactive`.",
)
def export_fhir(
    sessions: Sessions,
    now: Now,
    survivor_id: str,
    consent_id: str,
    request: Request,
    actor: Actor,
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="A version; default: latest")
    ] = None,
) -> FhirJSONResponse:
    with sessions() as session:
        service.access(session=session, principal=actor, survivor_id=survivor_id)
        if version is not None:
            consent = service.version(
                session=session,
                survivor_id=survivor_id,
                consent_id=consent_id,
                number=version,
                now=now,
            )
            return _exported(consent)
        service.latest(session=session, survivor_id=survivor_id, consent_id=consent_id)
        current = service.current_consents(session=session, survivor_id=survivor_id, now=now)
        return _exported(next(c for c in current if c.id == consent_id))


@router.post(
    "/survivors/{survivor_id}/consents/fhir",
    status_code=201,
    response_class=FhirJSONResponse,
    responses={201: _FHIR_RESPONSE[200], **_REFUSED, **errors(503)},
    summary="Import a FHIR R4 Consent as a new consent",
    description="Grant a consent given as a FHIR R4 `Consent` resource (active, scope "
    "`patient-privacy`, `patient` = `Patient/<this survivor's pseudonym>`). The provision tree "
    "is flattened into Accord provisions as docs/fhir-consent-mapping.md describes. The "
    "consent is recorded as made by the caller; `performer`, `dateTime`, `id` and `meta` are "
    "not taken from the resource. Anything Accord cannot honour (data references, security "
    "labels, unknown codes or code systems, a permit inside a deny, ...) refuses the whole "
    "resource with 422 and `detail`: every problem with its JSON path, never a value from the "
    "request. Answers with the stored consent, exported; acknowledged once in effect (R3).",
)
async def import_fhir(
    sessions: Sessions,
    now: Now,
    survivor_id: str,
    request: Request,
    actor: Actor,
    resource: Annotated[
        dict[str, Any],
        Body(media_type=FHIR_JSON, description="A FHIR R4 Consent resource", examples=[_EXAMPLE]),
    ],
) -> FhirJSONResponse:
    def checked() -> ConsentIn:  # blocking: in the threadpool, never on the event loop
        with sessions() as session:
            service.access(session=session, principal=actor, survivor_id=survivor_id)
            data = from_fhir(resource, survivor_id=survivor_id)
            named = {p for prov in data.provisions for p in prov.recipients.partners}
            if any(session.get(registry_models.Partner, p) is None for p in sorted(named)):
                raise FhirRefused(["provision: an actor names a partner Accord does not know"])
            return data

    try:
        data = await run_in_threadpool(checked)
    except FhirRefused as exc:
        raise HTTPException(422, detail=_problems(exc.problems)) from exc
    consent = await run_in_threadpool(
        change, sessions, now, actor, survivor_id, data, "grant", limits=time_limits(request)
    )
    await publish_snapshot(request, survivor_id)
    return _exported(consent, status_code=201)


say_consent_is_not_a_condition(router)
