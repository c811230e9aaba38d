"""Consent operations: keyword-only functions taking a session; the caller owns the transaction.

Access rules (who may act for which survivor) live in ``access``; everything else assumes the
caller was admitted. Every change appends a version and bumps the survivor's ``change_seq``,
so the snapshot published to the relay is ordered even when changes race.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.atrest import store as atrest
from services.audit import record as audit
from services.auth.principals import Principal, Role
from services.auth.service import issue_credential
from services.consent import models
from services.consent.schemas import Consent, ConsentIn, Evidence, Provision, RecordedBy
from services.errors import DomainError


class ConsentError(DomainError):
    """A request the consent service refuses; ``status`` is the HTTP status to answer with."""


def _forbidden() -> ConsentError:
    return ConsentError(403, "You may not act for this survivor.")


def access(*, session: Session, principal: Principal, survivor_id: str) -> models.Survivor:
    """The survivor, if ``principal`` may see and change their consents; else 403.

    An unknown id and a survivor the principal may not act for get the same answer, so no
    one learns whether another agency serves a survivor of that id."""
    survivor = session.get(models.Survivor, survivor_id)
    if principal.role is Role.SURVIVOR:
        if principal.subject != survivor_id or survivor is None:
            raise _forbidden()
        return survivor
    if principal.role is Role.ADVOCATE:
        if survivor is None or survivor.agency_id != principal.agency_id:
            raise _forbidden()
        return survivor
    if principal.role is Role.GUARDIAN:
        link = guardianship(session, principal.subject, survivor_id)
        if survivor is None or link is None or link.suspect:
            raise _forbidden()  # a guardian recorded as a suspect can do nothing (R5)
        return survivor
    raise ConsentError(403, "This action needs the role: advocate, guardian or survivor.")


def guardianship(session: Session, guardian_id: str, survivor_id: str) -> models.Guardian | None:
    return session.scalars(
        select(models.Guardian).where(
            models.Guardian.guardian_id == guardian_id,
            models.Guardian.survivor_id == survivor_id,
        )
    ).first()


# A guardian's relation to the minor is sealed with the survivor's data key (services/atrest),
# in the guardian's row and in the consent versions that guardian recorded.
RELATION = "guardians.relation"
RECORDED_RELATION = "consent_versions.recorded_by"


def relation_of(session: Session, link: models.Guardian) -> str | None:
    """The guardian's relation in clear; None when erased with the survivor's data key."""
    return atrest.open_text(
        session, link.relation, survivor_id=link.survivor_id, purpose=RELATION, row=str(link.id)
    )


def recorded_by(*, session: Session, principal: Principal, survivor_id: str) -> RecordedBy:
    if principal.role is Role.GUARDIAN:
        link = guardianship(session, principal.subject, survivor_id)
        assert link is not None  # access() admitted this guardian
        relation = relation_of(session, link)
        return RecordedBy(role="guardian", actor=principal.subject, relation=relation)
    role = "self" if principal.role is Role.SURVIVOR else "advocate"
    return RecordedBy(role=role, actor=principal.subject)


# --- survivors, guardians, enrollment -------------------------------------------------------


def register_survivor(
    *, session: Session, survivor_id: str, agency_id: str, now: datetime
) -> models.Survivor:
    if session.get(models.Survivor, survivor_id) is not None:
        raise ConsentError(409, "A survivor with this id is already registered.")
    survivor = models.Survivor(id=survivor_id, agency_id=agency_id, created_at=now)
    session.add(survivor)
    return survivor


def record_guardian(
    *, session: Session, survivor: models.Survivor, guardian_id: str, relation: str, suspect: bool
) -> models.Guardian:
    link = guardianship(session, guardian_id, survivor.id)
    if link is None:
        # The sealed relation is bound to the row id, which the insert assigns.
        link = models.Guardian(guardian_id=guardian_id, survivor_id=survivor.id, relation="")
        session.add(link)
        session.flush()
    was_suspect = link.suspect
    link.relation = atrest.seal_text(
        session, relation, survivor_id=survivor.id, purpose=RELATION, row=str(link.id)
    )
    link.suspect = suspect
    if suspect != was_suspect:
        # Consents this guardian recorded become void or valid again: republish the snapshot.
        bump(session, survivor)
    return link


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_enrollment_code(
    *,
    session: Session,
    survivor: models.Survivor,
    role: Role,
    subject: str,
    issued_by: str,
    now: datetime,
    ttl: timedelta,
) -> str:
    code_id, secret = secrets.token_hex(4), secrets.token_hex(8)
    session.add(
        models.EnrollmentCode(
            id=code_id,
            secret_sha256=_digest(secret),
            role=role.value,
            subject=subject,
            survivor_id=survivor.id,
            issued_by=issued_by,
            expires_at=now + ttl,
        )
    )
    return f"{code_id}-{secret}"


def redeem_enrollment_code(*, session: Session, code: str, now: datetime) -> tuple[str, str]:
    """Exchange a code for a credential; returns (api key, role). Single use."""
    code_id, _, secret = code.strip().partition("-")
    row = session.get(models.EnrollmentCode, code_id, with_for_update=True) if code_id else None
    expected = row.secret_sha256 if row is not None else _digest("")
    valid = hmac.compare_digest(expected, _digest(secret)) and row is not None
    if row is None or not valid or row.used_at is not None or row.expires_at <= now:
        raise ConsentError(401, "This enrollment code is not valid (wrong, used or expired).")
    row.used_at = now
    survivor = session.get(models.Survivor, row.survivor_id)
    assert survivor is not None
    role = Role(row.role)
    key = issue_credential(session=session, role=role, subject=row.subject)
    return key, role.value


# --- consents -------------------------------------------------------------------------------


EVIDENCE = "consent_versions.evidence"  # the purpose its ciphertext is bound to


def _seal_evidence(session: Session, row: models.ConsentVersion, evidence: Evidence) -> str:
    return atrest.seal_text(
        session,
        json.dumps(evidence.model_dump(mode="json"), sort_keys=True),
        survivor_id=row.survivor_id,
        purpose=EVIDENCE,
        row=f"{row.consent_id}:{row.version}",
    )


def _open_evidence(session: Session, row: models.ConsentVersion) -> Evidence | None:
    if row.evidence is None:
        return None
    text = atrest.open_text(
        session,
        row.evidence,
        survivor_id=row.survivor_id,
        purpose=EVIDENCE,
        row=f"{row.consent_id}:{row.version}",
    )
    return None if text is None else Evidence.model_validate_json(text)


def _seal_recorded_by(
    session: Session, row: models.ConsentVersion, by: RecordedBy
) -> dict[str, Any]:
    doc = by.model_dump(mode="json")
    if by.relation is not None:
        doc["relation"] = atrest.seal_text(
            session,
            by.relation,
            survivor_id=row.survivor_id,
            purpose=RECORDED_RELATION,
            row=f"{row.consent_id}:{row.version}",
        )
    return doc


def _open_recorded_by(session: Session, row: models.ConsentVersion, *, clear: bool) -> Any:
    """``recorded_by`` with the relation opened (None when erased), or without it (the
    relay's snapshot: the policy does not read it)."""
    doc = dict(row.recorded_by)
    token = doc.pop("relation", None)
    if clear and token is not None:
        doc["relation"] = atrest.open_text(
            session,
            token,
            survivor_id=row.survivor_id,
            purpose=RECORDED_RELATION,
            row=f"{row.consent_id}:{row.version}",
        )
    return doc


def _consent(
    session: Session,
    row: models.ConsentVersion,
    *,
    now: datetime | None = None,
    evidence: bool = True,
) -> Consent:
    """The stored version; ``evidence=False`` skips decrypting anything sealed (the relay's
    snapshot: evidence and a guardian's relation are left out)."""
    opened = _open_evidence(session, row) if evidence else None
    consent = Consent.model_validate(
        {
            "id": row.consent_id,
            "survivor_id": row.survivor_id,
            "version": row.version,
            "status": row.status,
            "provisions": row.provisions,
            "recorded_by": _open_recorded_by(session, row, clear=evidence),
            "evidence": opened,
            "evidence_erased": evidence and opened is None,
            "recorded_at": row.recorded_at,
        }
    )
    if now is None:
        return consent
    return consent.model_copy(update={"status": status_at(consent.status, consent.provisions, now)})


def status_at(stored: str, provisions: list[Provision], now: datetime) -> str:
    """The status people see at ``now``: an active consent whose every provision has ended is
    expired. Every answer of the API (grant, amend, list, versions) computes it here."""
    ended = all(p.period.end is not None and p.period.end <= now for p in provisions)
    return "expired" if stored == "active" and ended else stored


def bump(session: Session, survivor: models.Survivor) -> None:
    survivor.change_seq = (survivor.change_seq or 0) + 1


def _append(
    session: Session,
    survivor: models.Survivor,
    *,
    consent_id: str,
    version: int,
    status: str,
    provisions: list[Provision],
    by: RecordedBy,
    evidence: Evidence | None,
    now: datetime,
) -> Consent:
    row = models.ConsentVersion(
        consent_id=consent_id,
        version=version,
        survivor_id=survivor.id,
        status=status,
        provisions=[p.model_dump(mode="json") for p in provisions],
        recorded_at=now,
    )
    row.recorded_by = _seal_recorded_by(session, row, by)
    # None only when revoking a version whose evidence was erased: nothing left to keep.
    row.evidence = None if evidence is None else _seal_evidence(session, row, evidence)
    session.add(row)
    bump(session, survivor)
    session.flush()
    audit.consent_change(session, row)  # in this transaction: the change and its entry
    return _consent(session, row, now=now)


def _lock(session: Session, survivor: models.Survivor) -> None:
    # Serialise changes per survivor so versions and change_seq never interleave.
    session.refresh(survivor, with_for_update=True)


def _not_erased(session: Session, survivor: models.Survivor) -> None:
    # An erased survivor is a tombstone (docs/at-rest.md): what they consented to ended
    # with the erasure, and nothing new is recorded about them.
    if atrest.is_erased(session, survivor.id):
        raise ConsentError(
            410, "This survivor's data was erased: no consent is recorded for them any more."
        )


def grant(
    *, session: Session, survivor: models.Survivor, data: ConsentIn, by: RecordedBy, now: datetime
) -> Consent:
    _lock(session, survivor)
    _not_erased(session, survivor)
    return _append(
        session,
        survivor,
        consent_id=f"consent-{uuid.uuid4().hex[:16]}",
        version=1,
        status="active",
        provisions=data.provisions,
        by=by,
        evidence=data.evidence,
        now=now,
    )


def latest(*, session: Session, survivor_id: str, consent_id: str) -> models.ConsentVersion:
    row = session.scalars(
        select(models.ConsentVersion)
        .where(
            models.ConsentVersion.consent_id == consent_id,
            models.ConsentVersion.survivor_id == survivor_id,
        )
        .order_by(models.ConsentVersion.version.desc())
    ).first()
    if row is None:
        raise ConsentError(404, "No consent with this id for this survivor.")
    return row


def amend(
    *,
    session: Session,
    survivor: models.Survivor,
    consent_id: str,
    data: ConsentIn,
    by: RecordedBy,
    now: datetime,
) -> Consent:
    """A new version with new provisions (to narrow, or widen, what is shared)."""
    _lock(session, survivor)
    _not_erased(session, survivor)
    current = latest(session=session, survivor_id=survivor.id, consent_id=consent_id)
    if current.status != "active":
        raise ConsentError(409, "This consent was revoked; grant a new one instead.")
    return _append(
        session,
        survivor,
        consent_id=consent_id,
        version=current.version + 1,
        status="active",
        provisions=data.provisions,
        by=by,
        evidence=data.evidence,
        now=now,
    )


def revoke(
    *, session: Session, survivor: models.Survivor, consent_id: str, by: RecordedBy, now: datetime
) -> Consent:
    _lock(session, survivor)
    current = latest(session=session, survivor_id=survivor.id, consent_id=consent_id)
    if current.status == "revoked":
        raise ConsentError(409, "This consent is already revoked.")
    previous = _consent(session, current)
    return _append(
        session,
        survivor,
        consent_id=consent_id,
        version=current.version + 1,
        status="revoked",
        provisions=previous.provisions,
        by=by,
        evidence=previous.evidence,
        now=now,
    )


ERASURE_ACTOR = "erasure:"  # recorded_by.actor of the revocations an erasure makes


def ended_by_erasure(*, session: Session, survivor_id: str) -> list[Consent]:
    """The revocations an erasure made (to notify again when the first sending failed)."""
    return [
        c
        for c in current_consents(
            session=session, survivor_id=survivor_id, now=None, evidence=False
        )
        if c.status == "revoked" and c.recorded_by.actor.startswith(ERASURE_ACTOR)
    ]


def end_for_erasure(*, session: Session, survivor_id: str, by: str, now: datetime) -> list[Consent]:
    """Revoke every consent of the survivor still active, in the erasure's transaction: a
    revoked version each, recorded by the operator who erased (``by``), chained as any
    revocation. Returns the revocations (to notify earlier recipients)."""
    survivor = session.get(models.Survivor, survivor_id)
    if survivor is None:
        return []
    _lock(session, survivor)
    ended = []
    for c in current_consents(session=session, survivor_id=survivor_id, now=None, evidence=False):
        if c.status == "revoked":
            continue
        ended.append(
            _append(
                session,
                survivor,
                consent_id=c.id,
                version=c.version + 1,
                status="revoked",
                provisions=c.provisions,
                by=RecordedBy(role="advocate", actor=f"{ERASURE_ACTOR}{by}"),
                evidence=None,  # erased with the keys
                now=now,
            )
        )
    return ended


def current_consents(
    *, session: Session, survivor_id: str, now: datetime | None, evidence: bool = True
) -> list[Consent]:
    """The latest version of each of the survivor's consents; expiry applied at ``now`` if given.

    Snapshots for the relay pass ``None``: they carry stored statuses, and the policy judges
    expiry at event time (R3), so no job is needed for correctness.
    """
    newest = (
        select(
            models.ConsentVersion.consent_id,
            func.max(models.ConsentVersion.version).label("version"),
        )
        .where(models.ConsentVersion.survivor_id == survivor_id)
        .group_by(models.ConsentVersion.consent_id)
        .subquery()
    )
    rows = session.scalars(
        select(models.ConsentVersion)
        .join(
            newest,
            (models.ConsentVersion.consent_id == newest.c.consent_id)
            & (models.ConsentVersion.version == newest.c.version),
        )
        .order_by(models.ConsentVersion.recorded_at, models.ConsentVersion.consent_id)
    )
    return [_consent(session, r, now=now, evidence=evidence) for r in rows]


def version(
    *,
    session: Session,
    survivor_id: str,
    consent_id: str,
    number: int,
    now: datetime | None = None,
    evidence: bool = True,
) -> Consent:
    """One stored version; with ``now``, its status as seen then (``status_at``);
    ``evidence=False`` leaves the sealed evidence closed (for checks that need only terms)."""
    row = session.get(models.ConsentVersion, (consent_id, number))
    if row is None or row.survivor_id != survivor_id:
        raise ConsentError(404, "No such consent version for this survivor.")
    return _consent(session, row, now=now, evidence=evidence)
