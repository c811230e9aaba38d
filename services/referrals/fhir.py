"""A referral as FHIR R4 resources, after the Gravity SDOH Clinical Care shapes: a ``Task``
(profile SDOHCC Task For Referral Management: ``intent`` order, ``code`` fulfill, ``focus`` the
``ServiceRequest``, ``requester`` the referring agency, ``owner`` the partner) and its
``ServiceRequest``. Validated with ``fhir.resources`` (its R4B models: Task and ServiceRequest
are R4's), on export and on import.

Export carries ids, codes and times only: the survivor as an identifier (their pseudonym),
never a name; no field of the payload (what the partner received came through the relay);
never the partner's decline note.

Import: a partner system (a Gravity "light" recipient that polls, or a full one) sends back
the Task with a new ``status``; that status is the move: ``received`` acknowledge, ``accepted``
accept, ``rejected`` decline (``statusReason`` a decline code, ``note`` the free text),
``completed`` complete (``output`` an outcome code), ``failed`` close (``statusReason`` a
closure code). A Task whose status is the referral's already is no move.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from pydantic import ValidationError

from services.referrals.models import Referral
from services.referrals.states import Action, State

TASK_PROFILE = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-TaskForReferralManagement"
)
SERVICE_REQUEST_PROFILE = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ServiceRequest"
)
TASK_CODES = "http://hl7.org/fhir/CodeSystem/task-code"
SYSTEM = "urn:accord"
REFERRAL = f"{SYSTEM}:referral"
SURVIVOR = f"{SYSTEM}:survivor"
STATE = f"{SYSTEM}:referral-state"
REASON = f"{SYSTEM}:referral-reason"
OUTCOME = f"{SYSTEM}:referral-outcome"
PURPOSE = f"{SYSTEM}:purpose"
PARTNER_TYPE = f"{SYSTEM}:partner-type"

# Accord's state → FHIR Task.status (businessStatus keeps Accord's own word).
TASK_STATUS: dict[State, str] = {
    State.MADE: "requested",
    State.DELIVERED: "requested",
    State.ACKNOWLEDGED: "received",
    State.ACCEPTED: "accepted",
    State.DECLINED: "rejected",
    State.COMPLETED: "completed",
    State.CLOSED: "failed",
    State.WITHDRAWN: "cancelled",
    State.EXPIRED: "cancelled",
    State.REFUSED: "cancelled",
}
# A partner's Task.status → the move it asks for.
IMPORTED: dict[str, Action] = {
    "received": Action.ACKNOWLEDGE,
    "accepted": Action.ACCEPT,
    "rejected": Action.DECLINE,
    "completed": Action.COMPLETE,
    "failed": Action.CLOSE,
}
SERVICE_REQUEST_STATUS: dict[State, str] = {
    State.COMPLETED: "completed",
    State.DECLINED: "revoked",
    State.CLOSED: "revoked",
    State.WITHDRAWN: "revoked",
    State.EXPIRED: "revoked",
    State.REFUSED: "revoked",
}


class FhirError(Exception):
    """A Task that cannot be imported: where, never what it held."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _ts(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}], "text": code}


def task(r: Referral) -> dict[str, Any]:
    state = State(r.state)
    doc: dict[str, Any] = {
        "resourceType": "Task",
        "id": r.id,
        "meta": {"profile": [TASK_PROFILE]},
        "identifier": [{"system": REFERRAL, "value": r.id}],
        "status": TASK_STATUS[state],
        "businessStatus": _concept(STATE, state.value),
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODES, "code": "fulfill"}]},
        "focus": {"reference": f"ServiceRequest/{r.id}-sr"},
        "for": {"identifier": {"system": SURVIVOR, "value": r.survivor_id}},
        "authoredOn": _ts(r.made_at),
        "lastModified": _ts(r.updated_at),
        "requester": {"reference": f"Organization/{r.agency_id}"},
        "owner": {"reference": f"Organization/{r.partner_id}"},
    }
    if r.reason_code is not None:
        doc["statusReason"] = _concept(REASON, r.reason_code)
    if r.outcome_code is not None:
        doc["output"] = [
            {
                "type": _concept(OUTCOME, "outcome"),
                "valueCodeableConcept": _concept(OUTCOME, r.outcome_code),
            }
        ]
    return doc


def service_request(r: Referral) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": f"{r.id}-sr",
        "meta": {"profile": [SERVICE_REQUEST_PROFILE]},
        "identifier": [{"system": REFERRAL, "value": r.id}],
        "status": SERVICE_REQUEST_STATUS.get(State(r.state), "active"),
        "intent": "order",
        "category": [_concept(PURPOSE, r.purpose)],
        "code": _concept(PARTNER_TYPE, r.partner_type),
        "subject": {"identifier": {"system": SURVIVOR, "value": r.survivor_id}},
        "authoredOn": _ts(r.made_at),
        "requester": {"reference": f"Organization/{r.agency_id}"},
        "performer": [{"reference": f"Organization/{r.partner_id}"}],
    }


def bundle(r: Referral) -> dict[str, Any]:
    """The Task and its ServiceRequest, validated, as one ``collection`` Bundle."""
    t, sr = task(r), service_request(r)
    Task.model_validate(t)
    ServiceRequest.model_validate(sr)
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:accord:Task/{r.id}", "resource": t},
            {"fullUrl": f"urn:accord:ServiceRequest/{r.id}-sr", "resource": sr},
        ],
    }
    Bundle.model_validate(doc)
    return doc


def _code(concept: Any, system: str) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == system:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def imported_move(doc: Any, r: Referral) -> tuple[Action, str | None, str | None] | None:
    """The move a partner's Task asks for, with its code and note; None if its status is the
    referral's already. Raises ``FhirError`` (naming where, never the value)."""
    if not isinstance(doc, dict) or doc.get("resourceType") != "Task":
        raise FhirError("Not a FHIR Task (resourceType).")
    try:
        Task.model_validate(doc)
    except ValidationError as exc:
        where = sorted({".".join(map(str, e["loc"])) or "(task)" for e in exc.errors()})
        raise FhirError("Not a valid FHIR R4 Task at: " + ", ".join(where[:10])) from exc
    if doc.get("id") != r.id:
        raise FhirError("The Task's id is not this referral's (id).")
    status = doc.get("status")
    if status == TASK_STATUS[State(r.state)]:
        return None
    action = IMPORTED.get(status) if isinstance(status, str) else None
    if action is None:
        known = ", ".join(IMPORTED)
        raise FhirError(f"A partner sets the Task's status to one of: {known} (status).")
    code: str | None = None
    if action in (Action.DECLINE, Action.CLOSE):
        code = _code(doc.get("statusReason"), REASON)
    elif action is Action.COMPLETE:
        outputs = doc.get("output") or []
        code = next(
            (c for o in outputs if (c := _code(o.get("valueCodeableConcept"), OUTCOME))), None
        )
    note: str | None = None
    if action is Action.DECLINE:
        texts = [n.get("text") for n in doc.get("note") or [] if isinstance(n, dict)]
        note = "\n".join(t for t in texts if isinstance(t, str)) or None
    return action, code, note
