"""Registry operations (keyword-only, taking a session); the caller owns the transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.registry import models
from services.registry.schemas import PartnerIn, RegistryIn


def upsert_partner(*, session: Session, partner: PartnerIn) -> models.Partner:
    row = session.get(models.Partner, partner.id) or models.Partner(id=partner.id)
    for name, value in partner.model_dump(exclude={"id", "agreements", "subscriptions"}).items():
        setattr(row, name, value)
    row.agreements = [models.Agreement(**a.model_dump()) for a in partner.agreements]
    row.subscriptions = [models.Subscription(**s.model_dump()) for s in partner.subscriptions]
    session.add(row)
    return row


def load_registry(*, session: Session, registry: RegistryIn) -> None:
    """Make the database hold these agencies and partners (others are left as they are)."""
    for agency in registry.agencies:
        session.merge(models.Agency(**agency.model_dump()))
    for partner in registry.partners:
        upsert_partner(session=session, partner=partner)
