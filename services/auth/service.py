"""Issue, check and revoke API keys.

A key reads ``acc_<id>_<secret>``: the id finds the row, the secret is compared by hash in
constant time. Secrets carry 256 bits of randomness, so a single fast hash is enough; a
slow password hash would only add latency to every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from services.auth.models import Credential
from services.auth.principals import Principal, Role

PREFIX = "acc"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_credential(
    *, session: Session, role: Role, subject: str, agency_id: str | None = None
) -> str:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    session.add(
        Credential(
            id=key_id,
            secret_sha256=_digest(secret),
            role=role.value,
            subject=subject,
            agency_id=agency_id if role is not Role.AGENCY else subject,
            created_at=datetime.now(UTC),
        )
    )
    return f"{PREFIX}_{key_id}_{secret}"


def authenticate(*, session: Session, token: str) -> Principal | None:
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret:
        return None
    cred = session.get(Credential, key_id)
    # Compare even when the row is missing, so timing does not reveal which ids exist.
    expected = cred.secret_sha256 if cred is not None else _digest("")
    if not hmac.compare_digest(expected, _digest(secret)) or cred is None:
        return None
    if cred.revoked_at is not None:
        return None
    return Principal(
        role=Role(cred.role), subject=cred.subject, credential_id=cred.id, agency_id=cred.agency_id
    )


def revoke_credential(*, session: Session, credential_id: str) -> bool:
    cred = session.get(Credential, credential_id)
    if cred is None or cred.revoked_at is not None:
        return False
    cred.revoked_at = datetime.now(UTC)
    return True


def rotate_credential(*, session: Session, principal: Principal) -> str:
    """A new key for the same role, subject and agency; the presented one is revoked in the
    same transaction, so it stops working as soon as the new one exists."""
    return rotate_credential_id(session=session, credential_id=principal.credential_id)


def rotate_credential_id(*, session: Session, credential_id: str) -> str:
    """``rotate_credential`` by id (the operator's ``accord credentials rotate``)."""
    cred = session.get(Credential, credential_id, with_for_update=True)
    if cred is None or cred.revoked_at is not None:
        raise LookupError("This key is no longer valid.")
    cred.revoked_at = datetime.now(UTC)
    return issue_credential(
        session=session, role=Role(cred.role), subject=cred.subject, agency_id=cred.agency_id
    )
