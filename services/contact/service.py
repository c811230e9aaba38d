"""Safe-contact preferences: recorded sealed, read through the survivor's data key.

Keyword-only functions taking a session; the caller owns the transaction and has admitted the
principal (``services.consent.service.access``: the survivor, their agency's advocate, a
guardian who is not a suspect). Nothing here logs a preference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.atrest import store as atrest
from services.atrest.envelope import Unreadable
from services.contact import models
from services.contact.gate import ERASED, Preference
from services.contact.schemas import ContactPreferenceIn, ContactPreferenceOut, SharedPreference
from services.vocabulary import Category

PREFERENCE = "contact_preferences.preference"  # the purpose its ciphertext is bound to
CONTACT = Category.CONTACT.value  # the category a partner needs consent for (R2)


def save(
    *,
    session: Session,
    survivor_id: str,
    data: ContactPreferenceIn,
    by: str,
    now: datetime,
) -> ContactPreferenceOut:
    """Record (or replace) the survivor's preference, sealed with their data key. Raises
    ``atrest.SurvivorErased`` for an erased survivor: nothing new is recorded about them."""
    token = atrest.seal_text(
        session,
        data.model_dump_json(),
        survivor_id=survivor_id,
        purpose=PREFERENCE,
        row=survivor_id,
    )
    row = session.get(models.ContactPreference, survivor_id)
    if row is None:
        row = models.ContactPreference(survivor_id=survivor_id)
        session.add(row)
    row.preference, row.updated_at, row.updated_by = token, now, by
    return _out(row, data)


def _out(row: models.ContactPreference, data: ContactPreferenceIn) -> ContactPreferenceOut:
    return ContactPreferenceOut(
        **data.model_dump(),
        survivor_id=row.survivor_id,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def read_preference(session: Session, survivor_id: str) -> Preference:
    """The preference in clear; None if none is recorded; ``ERASED`` when it can no longer be
    read (the survivor's key was erased). Tampering raises ``Unreadable``."""
    row = session.get(models.ContactPreference, survivor_id)
    if row is None:
        return ERASED if atrest.is_erased(session, survivor_id) else None
    text = atrest.open_text(
        session, row.preference, survivor_id=survivor_id, purpose=PREFERENCE, row=survivor_id
    )
    return ERASED if text is None else ContactPreferenceIn.model_validate_json(text)


def load(*, session: Session, survivor_id: str) -> ContactPreferenceOut | None:
    """The recorded preference as the API shows it; None when none is recorded or erased."""
    row = session.get(models.ContactPreference, survivor_id)
    pref = read_preference(session, survivor_id)
    if row is None or not isinstance(pref, ContactPreferenceIn):
        return None
    return _out(row, pref)


# --- what a partner may receive with a referral (pure) ----------------------------------------


def _at(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _in_force(provision: Mapping[str, Any], now: datetime) -> bool:
    period = provision.get("period") or {}
    start, end = _at(period.get("start")), _at(period.get("end"))
    return start is not None and start <= now and (end is None or now < end)


def _counts(consent: Mapping[str, Any]) -> bool:
    """Active, and not recorded by a guardian who is (or may be) a suspect (R5)."""
    by = consent.get("recorded_by") or {}
    suspect = by.get("role") == "guardian" and by.get("suspect") is not False
    return consent.get("status") == "active" and not suspect


def _about(
    provision: Mapping[str, Any], partner_id: str, partner_type: str, purpose: str, *, named: bool
) -> bool:
    recipients = provision.get("recipients") or {}
    by_name = partner_id in recipients.get("partners", []) or partner_type in recipients.get(
        "partner_types", []
    )
    starred = "*" in recipients.get("partner_types", [])
    purposes = provision.get("purposes", [])
    return (by_name or (starred and not named)) and (purpose in purposes or "*" in purposes)


def may_share_contact(
    consents: Iterable[Mapping[str, Any]],
    *,
    partner_id: str,
    partner_type: str,
    purpose: str,
    now: datetime,
    named_consent_required: bool = False,
) -> bool:
    """Whether the survivor consented to share contact data (category ``contact``) with this
    partner for this purpose at ``now``, read from the consents of the consent view
    (``SurvivorFacts.consents``, as the relay's policy reads them): a live permit covering
    ``contact`` (named, or ``"*"``: contact is not sensitive), and no deny in force covering it,
    in any consent (R2, R3). ``named_consent_required``: the partner is a restricted recipient
    (R4), so only a permit naming it (by id or type) counts. Pure: no session, no clock."""
    permitted = False
    for consent in consents:
        if not _counts(consent):
            continue
        for p in consent.get("provisions", []):
            covers = CONTACT in p.get("categories", []) or "*" in p.get("categories", [])
            if not covers or not _in_force(p, now):
                continue
            if p.get("type") == "deny" and _about(
                p, partner_id, partner_type, purpose, named=False
            ):
                return False
            if p.get("type") == "permit" and _about(
                p, partner_id, partner_type, purpose, named=named_consent_required
            ):
                permitted = True
    return permitted


def shared(pref: Preference) -> SharedPreference | None:
    """The preference as a partner receives it; None when none can be given (none recorded,
    or erased: the partner then has no safe way and must ask the referring agency)."""
    if not isinstance(pref, ContactPreferenceIn):
        return None
    return SharedPreference(**pref.model_dump())


def preference_for_partner(
    session: Session,
    *,
    survivor_id: str,
    consents: Iterable[Mapping[str, Any]],
    partner_id: str,
    partner_type: str,
    purpose: str,
    now: datetime,
    named_consent_required: bool = False,
) -> SharedPreference | None:
    """The preference to send with a referral to this partner, only where the survivor
    consented to share contact data with it (``may_share_contact``); else None."""
    if not may_share_contact(
        consents,
        partner_id=partner_id,
        partner_type=partner_type,
        purpose=purpose,
        now=now,
        named_consent_required=named_consent_required,
    ):
        return None
    try:
        return shared(read_preference(session, survivor_id))
    except Unreadable:
        return None
