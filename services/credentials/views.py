"""Credential lifecycle over HTTP: any principal rotates its own key; an admin lists and
revokes anyone's. A revoked key fails its very next request (``authenticate`` reads the
credentials table on every call; there is no cache)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from services.auth import service
from services.auth.deps import CurrentPrincipal, require
from services.auth.models import Credential
from services.auth.principals import Principal, Role
from services.credentials import issuing
from services.deps import Sessions

router = APIRouter(prefix="/v1", tags=["credentials"])

Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="The <id> of acc_<id>_…")]

AUTH: dict[int | str, dict[str, Any]] = {401: {"description": "Missing or invalid API key"}}
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    **AUTH,
    403: {"description": "The key is not an admin's"},
}


class RotatedOut(BaseModel):
    api_key: str
    credential_id: str
    revoked_credential_id: str


class CredentialOut(BaseModel):
    id: str
    role: str
    subject: str
    agency_id: str | None
    created_at: datetime
    revoked_at: datetime | None


def _out(c: Credential) -> CredentialOut:
    return CredentialOut(
        id=c.id,
        role=c.role,
        subject=c.subject,
        agency_id=c.agency_id,
        created_at=c.created_at,
        revoked_at=c.revoked_at,
    )


@router.post(
    "/credentials/rotate",
    response_model=RotatedOut,
    summary="Replace the calling key: the new key is shown once, the old one stops at once",
    responses=AUTH,
)
def rotate(sessions: Sessions, principal: CurrentPrincipal, request: Request) -> RotatedOut:
    """Any role: a new key for the same subject and role, shown only in this answer; the
    calling key is revoked in the same transaction."""
    with sessions() as session, session.begin():
        try:
            key = service.rotate_credential(session=session, principal=principal)
        except LookupError as exc:  # revoked by someone else in the meantime
            raise HTTPException(401, detail=str(exc)) from exc
    return RotatedOut(
        api_key=key,
        credential_id=key.split("_")[1],
        revoked_credential_id=principal.credential_id,
    )


class IssueIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"role": "advocate", "subject": "adv-17", "agency_id": "riverbend-aid"}]
        },
    )
    role: Literal["agency", "partner", "advocate", "supervisor", "compliance"] = Field(
        description="Survivors and guardians get keys by enrollment code; admins from "
        "`accord credentials issue`."
    )
    subject: str = Field(
        min_length=1,
        max_length=128,
        description="The registered agency's or partner's id, or a staff member's id.",
    )
    agency_id: str | None = Field(
        default=None,
        max_length=64,
        description="The registered agency an advocate or supervisor acts for.",
    )


class IssuedOut(BaseModel):
    api_key: str = Field(description="Shown once: only its SHA-256 is stored.")
    credential: CredentialOut


@router.post(
    "/admin/credentials",
    response_model=IssuedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Issue a key for an agency, a partner, an advocate, a supervisor or compliance "
    "staff; the secret is shown once",
    responses={
        **ADMIN_ONLY,
        422: {"description": "Where the request is wrong (never what it contained)"},
    },
)
def issue(sessions: Sessions, body: IssueIn, _: Admin, request: Request) -> IssuedOut:
    """A new API key for a registered agency or partner, or for staff of a registered agency
    (advocates, supervisors) or compliance. The secret is in this answer only; admins' keys
    come from `accord credentials issue`, survivors' and guardians' from enrollment codes."""
    role = Role(body.role)
    with sessions() as session, session.begin():
        problems = issuing.check(session, role, body.subject, body.agency_id)
        if problems:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[
                    {"loc": ["body", p.field], "msg": p.message, "type": "value_error"}
                    for p in problems
                ],
            )
        key = service.issue_credential(
            session=session, role=role, subject=body.subject, agency_id=body.agency_id
        )
        session.flush()
        cred = session.get(Credential, key.split("_")[1])
        assert cred is not None
        # Every response carries Cache-Control: no-store (services/http_security.py).
        return IssuedOut(api_key=key, credential=_out(cred))


@router.get(
    "/admin/credentials",
    response_model=list[CredentialOut],
    summary="List the credentials of a subject (never their secrets)",
    responses=ADMIN_ONLY,
)
def list_credentials(
    sessions: Sessions,
    _: Admin,
    request: Request,
    subject: Annotated[str, Query(min_length=1, max_length=128)],
) -> list[CredentialOut]:
    """A subject's credentials, oldest first: id, role, when created and revoked."""
    with sessions() as session:
        rows = session.scalars(
            select(Credential).where(Credential.subject == subject).order_by(Credential.created_at)
        )
        return [_out(c) for c in rows]


@router.post(
    "/admin/credentials/{credential_id}/revoke",
    response_model=CredentialOut,
    summary="Revoke a credential; it fails from its next request (idempotent)",
    responses={**ADMIN_ONLY, 404: {"description": "No such credential"}},
)
def revoke(sessions: Sessions, credential_id: KeyId, _: Admin, request: Request) -> CredentialOut:
    """Revoke one credential by its id; revoking it again changes nothing."""
    with sessions() as session, session.begin():
        service.revoke_credential(session=session, credential_id=credential_id)
        cred = session.get(Credential, credential_id)
        if cred is None:
            raise HTTPException(404, detail="No such credential.")
        return _out(cred)
