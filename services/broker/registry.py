"""Who publishes and who is subscribed, as the relay sees it for one batch.

The relay takes a fresh snapshot for every batch, so a registry change applies from the next
event on. ``SqlRegistry`` reads the database; tests of pure logic build snapshots directly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from services.broker.pipeline.model import Agreement, Recipient
from services.registry import models
from services.unavailable import Unavailable


@dataclass(frozen=True)
class RegistrySnapshot:
    jurisdictions: dict[str, str]  # agency id → jurisdiction
    subscribers: dict[str, tuple[Recipient, ...]] = field(default_factory=dict)  # by event type
    agency_keys: dict[str, str | None] = field(default_factory=dict)  # agency id → verify key
    # Events addressed to one partner (a referral's payload, services/referrals/): by
    # "<agency>/<event id>", the survivor it is about and its one recipient. Such an event goes
    # to that partner alone, if the policy lets it, whoever else subscribes to its type.
    addressed: dict[str, tuple[str, Recipient]] = field(default_factory=dict)

    @property
    def agencies(self) -> frozenset[str]:
        return frozenset(self.jurisdictions)

    def recipients(
        self,
        event_type: str,
        *,
        publisher: str,
        event_id: str | None = None,
        survivor_id: str | None = None,
    ) -> tuple[Recipient, ...]:
        route = self.addressed.get(f"{publisher}/{event_id}") if event_id is not None else None
        if route is not None:  # a referral: its addressee only, and only about its survivor
            return (route[1],) if route[0] == survivor_id else ()
        # An agency does not receive its own events back through the relay.
        return tuple(r for r in self.subscribers.get(event_type, ()) if r.partner_id != publisher)

    def partner_ids(self) -> frozenset[str]:
        subscribed = {r.partner_id for rs in self.subscribers.values() for r in rs}
        return frozenset(subscribed | {r.partner_id for _, r in self.addressed.values()})


class Registry(Protocol):
    def snapshot(self) -> RegistrySnapshot: ...


def recipient_of(partner: models.Partner, purpose: str) -> Recipient:
    return Recipient(
        partner_id=partner.id,
        partner_type=partner.type,
        purpose=purpose,
        jurisdiction=partner.jurisdiction,
        status=partner.status,
        vetted=partner.vetted,
        immigration_enforcement=partner.immigration_enforcement,
        training_attested_until=partner.training_attested_until,
        public_key=partner.public_key or "",
        agreements=tuple(
            Agreement(a.id, tuple(a.purposes), tuple(a.categories), a.valid_from, a.valid_until)
            for a in partner.agreements
        ),
    )


class RegistryUnavailable(Unavailable):
    """The registry database cannot be read; the relay holds its batch and retries."""

    cause = "database_unavailable"  # the survivors' keys raise it too


@dataclass(frozen=True)
class Addressed:
    """An event addressed to one partner (a referral's payload): only that partner may get it."""

    agency_id: str
    event_id: str
    survivor_id: str
    partner_id: str
    purpose: str


# Reads the events now addressed to one partner; passed in (services/referrals/ provides it), so
# the relay's registry needs nothing of the referrals above it. Required: an unwired registry
# would let a referral's payload reach every subscriber of its type.
AddressedReader = Callable[[Session], Iterable[Addressed]]


class SqlRegistry:
    def __init__(self, sessions: sessionmaker[Session], addressed: AddressedReader) -> None:
        self._sessions = sessions
        self._addressed = addressed

    def snapshot(self) -> RegistrySnapshot:
        try:
            return self._read()
        except DBAPIError as exc:  # connection refused, server gone, …
            raise RegistryUnavailable(type(exc.orig).__name__) from exc

    def _read(self) -> RegistrySnapshot:
        with self._sessions() as session:
            rows = list(session.scalars(select(models.Agency)))
            agencies = {a.id: a.jurisdiction for a in rows}
            keys = {a.id: a.public_key for a in rows}
            by_type: defaultdict[str, list[Recipient]] = defaultdict(list)
            partners: dict[str, models.Partner] = {}
            for partner in session.scalars(select(models.Partner).order_by(models.Partner.id)):
                if not partner.public_key:
                    continue  # nothing can be sealed for it, so nothing is decided or sent
                partners[partner.id] = partner
                for sub in partner.subscriptions:
                    for event_type in sub.event_types:
                        by_type[event_type].append(recipient_of(partner, sub.purpose))
            addressed = {
                f"{r.agency_id}/{r.event_id}": (
                    r.survivor_id,
                    recipient_of(partners[r.partner_id], r.purpose),
                )
                for r in self._addressed(session)
                if r.partner_id in partners
            }
        return RegistrySnapshot(
            agencies, {t: tuple(rs) for t, rs in by_type.items()}, keys, addressed
        )
