"""Referrals: make, move, read; keyword-only functions taking ``*, session`` (the caller's
transaction). Each change is a row of the referral's history, an audit-chain entry in the same
transaction, and (once committed) a CloudEvent on the referrals topic (services/referrals/
publish.py).

Who sees what: the referring agency (and its supervisors) its own referrals; the addressed
partner a referral only once the relay delivered it (a partner that was refused, or never
addressed, gets the same 404 as for an id that does not exist: it never learns the referral
existed); compliance every referral; the survivor, their advocate or guardian the survivor's.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services import policy_data
from services.atrest import store as atrest
from services.audit import store as audit
from services.auth.principals import Principal, Role
from services.broker.pipeline.decide import build_input
from services.broker.pipeline.model import JSON, Decision, InboundEvent, SurvivorFacts
from services.broker.registry import Addressed, recipient_of
from services.referrals import events
from services.referrals.models import Referral, ReferralChange
from services.referrals.states import (
    REREFERABLE,
    Action,
    Actor,
    Refused,
    State,
    step,
)
from services.registry import models as broker

if TYPE_CHECKING:
    from services.contact.schemas import SharedPreference

NOTE_PURPOSE = "referral_note"
NOTE_MAX = 2000


class ReferralError(Exception):
    """A refused request: ``status`` is the HTTP answer, ``message`` a sentence that names
    the rule or transition and never echoes what was sent."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _not_found() -> ReferralError:
    return ReferralError(404, "No such referral (or not one this key may see).")


def new_id() -> str:
    return "ref-" + secrets.token_hex(12)


# --- addressing --------------------------------------------------------------------------


def eligible_partners(
    *, session: Session, partner_type: str, jurisdiction: str, exclude: Iterable[str] = ()
) -> list[broker.Partner]:
    """Partners of a type in a jurisdiction that can be sent anything at all: active, vetted,
    with a key to seal to, in id order. The policy still decides (R11: agreement, training)."""
    skip = set(exclude)
    rows = session.scalars(
        select(broker.Partner)
        .where(
            broker.Partner.type == partner_type,
            broker.Partner.jurisdiction == jurisdiction,
            broker.Partner.status == "active",
            broker.Partner.vetted.is_(True),
            broker.Partner.public_key.is_not(None),
        )
        .order_by(broker.Partner.id)
    )
    return [p for p in rows if p.id not in skip]


def chain_partners(session: Session, referral_id: str | None) -> list[str]:
    """The partners of a referral and of each one it re-refers (not to be proposed again)."""
    seen: list[str] = []
    while referral_id is not None:
        row = session.get(Referral, referral_id)
        if row is None:
            break
        seen.append(row.partner_id)
        referral_id = row.supersedes
    return seen


def candidates(
    *,
    session: Session,
    agency_id: str,
    survivor_id: str,
    partner_id: str | None,
    partner_type: str | None,
    jurisdiction: str | None,
    supersedes: str | None,
) -> tuple[str, list[broker.Partner]]:
    """Who the referral may go to, in order of preference, and how it was addressed."""
    if supersedes is not None:
        earlier = session.get(Referral, supersedes)
        if earlier is None or earlier.agency_id != agency_id:
            raise ReferralError(422, "The referral it supersedes is not one of your agency's.")
        if earlier.survivor_id != survivor_id:
            raise ReferralError(422, "A re-referral is about the same survivor (subject).")
        if State(earlier.state) not in REREFERABLE:
            allowed = ", ".join(sorted(s.value for s in REREFERABLE))
            raise ReferralError(
                409,
                f"Only a referral that is {allowed} can be re-referred; "
                f"the superseded one is {earlier.state}.",
            )
    if partner_id is not None:
        partner = session.get(broker.Partner, partner_id)
        if partner is None or not partner.public_key:
            raise ReferralError(422, "Unknown partner, or one nothing can be sealed for (to).")
        return "partner", [partner]
    assert partner_type is not None and jurisdiction is not None
    found = eligible_partners(
        session=session,
        partner_type=partner_type,
        jurisdiction=jurisdiction,
        exclude=chain_partners(session, supersedes),
    )
    if not found:
        raise ReferralError(
            422, "No partner of this type in this jurisdiction can be sent referrals (to)."
        )
    return "type", found


def policy_inputs(
    *,
    session: Session,
    agency_id: str,
    survivor_id: str,
    event_type: str,
    fields: Sequence[str],
    age: int | None,
    purpose: str,
    partners: Sequence[broker.Partner],
    now: datetime,
) -> list[JSON]:
    """The policy input for the referral's payload and each candidate: the relay's own
    (``build_input``), field names only."""
    from services.consent import models as consent_models
    from services.snapshot.build import snapshot

    agency = session.get(broker.Agency, agency_id)
    assert agency is not None
    survivor = session.get(consent_models.Survivor, survivor_id)
    facts = (
        snapshot(session=session, survivor=survivor).facts
        if survivor is not None
        else SurvivorFacts()
    )
    event = InboundEvent(
        id="referral",
        type=event_type,
        agency_id=agency_id,
        survivor_id=survivor_id,
        time=now,
        data=dict.fromkeys(fields),
        survivor_age=age,
    )
    return [
        build_input(
            event,
            recipient_of(p, purpose),
            jurisdiction=agency.jurisdiction,
            facts=facts,
            now=now,
        )
        for p in partners
    ]


def stopping_rules(d: Decision) -> list[str]:
    """The rule ids a decision names for what it let through or withheld."""
    return sorted({*d.reasons, *(r for w in d.withheld for r in w.rules)})


# --- changes -----------------------------------------------------------------------------


def _audit(session: Session, r: Referral, c: ReferralChange) -> None:
    record: dict[str, Any] = {
        "referral_id": r.id,
        "seq": c.seq,
        "action": c.action,
        "state": c.target,
        "previous_state": c.source,
        "event_id": events.event_id(r.id, c.seq),
        "event_type": events.TYPE_PREFIX + c.target,
        "agency_id": r.agency_id,
        "partner_id": r.partner_id,
        "partner_type": r.partner_type,
        "survivor_id": r.survivor_id,
        "purpose": r.purpose,
        "code": c.code,
        "by": c.by,
        "at": audit.ts(c.at),
    }
    if c.target == State.REFUSED:
        record["rules"] = list(r.refused_rules)
    if c.target == State.DELIVERED:
        record["released"] = list(r.released)
    audit.append(session, "referral", f"referral:{r.id}:{c.seq}", record)


def _change(
    session: Session,
    r: Referral,
    *,
    action: str,
    source: str | None,
    target: State,
    actor: Actor,
    by: str,
    code: str | None,
    at: datetime,
) -> ReferralChange:
    c = ReferralChange(
        referral_id=r.id,
        seq=r.seq if source is None else r.seq + 1,
        action=action,
        source=source,
        target=target.value,
        actor=actor.value,
        by=by,
        code=code,
        at=at,
        published=False,
    )
    r.seq = c.seq
    r.state = target.value
    r.updated_at = at
    r.history.append(c)
    session.flush()
    _audit(session, r, c)
    return c


def make(
    *,
    session: Session,
    agency_id: str,
    by: str,
    survivor_id: str,
    partner: broker.Partner,
    addressed_as: str,
    purpose: str,
    event_id: str,
    supersedes: str | None,
    decision: Decision,
    now: datetime,
) -> Referral:
    """Record a referral (made), and at once refused if the policy lets nothing through to
    the partner: then the payload is never published, and the rules are recorded."""
    if session.scalar(
        select(Referral.id).where(Referral.agency_id == agency_id, Referral.event_id == event_id)
    ):
        raise ReferralError(409, "Your agency already made a referral with this event id.")
    r = Referral(
        id=new_id(),
        agency_id=agency_id,
        survivor_id=survivor_id,
        partner_id=partner.id,
        partner_type=partner.type,
        jurisdiction=partner.jurisdiction,
        addressed_as=addressed_as,
        purpose=purpose,
        event_id=event_id,
        state=State.MADE.value,
        seq=0,
        supersedes=supersedes,
        made_by=by,
        made_at=now,
        updated_at=now,
        released=[],
        withheld=[],
        refused_rules=[],
    )
    session.add(r)
    session.flush()
    _change(
        session,
        r,
        action="make",
        source=None,
        target=State.MADE,
        actor=Actor.REFERRER,
        by=by,
        code=None,
        at=now,
    )
    if not decision.allow:
        _refuse(session, r, stopping_rules(decision) or ["R1"], now)
    return r


def _refuse(session: Session, r: Referral, rules: list[str], at: datetime) -> None:
    r.refused_rules = rules
    r.ended_at = at
    _change(
        session,
        r,
        action=Action.REFUSE.value,
        source=r.state,
        target=State.REFUSED,
        actor=Actor.ACCORD,
        by="accord",
        code=None,
        at=at,
    )


def _locked(session: Session, referral_id: str) -> Referral | None:
    return session.scalars(
        select(Referral).where(Referral.id == referral_id).with_for_update()
    ).first()


def visible(r: Referral | None, principal: Principal) -> bool:
    """Whether ``principal`` may see ``r`` (survivors' side: see ``for_survivor``)."""
    if r is None:
        return False
    if principal.role is Role.COMPLIANCE:
        return True
    if principal.role is Role.AGENCY:
        return r.agency_id == principal.subject
    if principal.role is Role.SUPERVISOR:
        return r.agency_id == principal.agency_id
    if principal.role is Role.PARTNER:
        return r.partner_id == principal.subject and r.delivered_at is not None
    return False


@dataclass(frozen=True)
class Party:
    """Who asks for a move, as the state machine knows it."""

    actor: Actor
    subject: str  # the partner or agency id, or "accord" / "deadline"
    by: str  # who exactly (the credential's subject), for the audit entry

    @classmethod
    def of(cls, principal: Principal) -> Party:
        if principal.role is Role.PARTNER:
            return cls(Actor.PARTNER, principal.subject, principal.subject)
        if principal.role is Role.AGENCY:
            return cls(Actor.REFERRER, principal.subject, principal.subject)
        if principal.role is Role.SUPERVISOR and principal.agency_id is not None:
            return cls(Actor.REFERRER, principal.agency_id, principal.subject)
        raise ReferralError(403, "Only the addressed partner or the referring agency moves it.")


def _party_sees(r: Referral, party: Party) -> bool:
    if party.actor is Actor.PARTNER:
        return r.partner_id == party.subject and r.delivered_at is not None
    if party.actor is Actor.REFERRER:
        return r.agency_id == party.subject
    return True  # Accord itself and the deadline worker


def move(
    *,
    session: Session,
    referral_id: str,
    action: Action,
    party: Party,
    now: datetime,
    code: str | None = None,
    note: str | None = None,
) -> Referral:
    """Take ``action`` on a referral as ``party``; a refused move raises ``ReferralError``
    (404 unseen, 403 not this party's move, 409 not from this state, 422 a bad code)."""
    r = _locked(session, referral_id)
    if r is None or not _party_sees(r, party):
        raise _not_found()
    target = step(State(r.state), action, actor=party.actor, code=code)
    if isinstance(target, Refused):
        raise ReferralError(target.status, target.message)
    if note is not None:
        if action is not Action.DECLINE:
            raise ReferralError(422, "Only a decline takes a note (note).")
        if len(note) > NOTE_MAX:
            raise ReferralError(422, f"A note is at most {NOTE_MAX} characters (note).")
        r.note = atrest.seal_text(
            session, note, survivor_id=r.survivor_id, purpose=NOTE_PURPOSE, row=r.id
        )
    if target is State.ACKNOWLEDGED:
        r.acknowledged_at = now
    elif target in (State.ACCEPTED, State.DECLINED):
        r.answered_at = now
    if target in (State.DECLINED, State.CLOSED, State.WITHDRAWN):
        r.reason_code = code
    if target is State.COMPLETED:
        r.outcome_code = code
    if target in (
        State.DECLINED,
        State.COMPLETED,
        State.CLOSED,
        State.WITHDRAWN,
        State.EXPIRED,
    ):
        r.ended_at = now
    _change(
        session,
        r,
        action=action.value,
        source=r.state,
        target=target,
        actor=party.actor,
        by=party.by,
        code=code,
        at=now,
    )
    if target is State.ACCEPTED:
        from services.referrals import notices  # the survivor is told, through the gate

        notices.referral_accepted(session, r, now)
    return r


def contact_for_partner(
    *, session: Session, r: Referral, policies: Path, now: datetime
) -> SharedPreference | None:
    """The survivor's safe-contact preference for the addressed partner, only where the
    survivor consented to share contact data with it for the referral's purpose (a partner
    type R4 restricts needs a consent naming it); else None."""
    from services.consent import models as consent_models
    from services.contact.service import preference_for_partner
    from services.snapshot.build import snapshot

    survivor = session.get(consent_models.Survivor, r.survivor_id)
    agency = session.get(broker.Agency, r.agency_id)
    if survivor is None or agency is None:
        return None
    facts = snapshot(session=session, survivor=survivor).facts
    return preference_for_partner(
        session,
        survivor_id=r.survivor_id,
        consents=facts.consents,
        partner_id=r.partner_id,
        partner_type=r.partner_type,
        purpose=r.purpose,
        now=now,
        named_consent_required=r.partner_type
        in policy_data.adult_restricted_types(policies, agency.jurisdiction),
    )


def on_decision(session: Session, doc: Mapping[str, Any]) -> Referral | None:
    """The relay's decision about a referral's payload (from the audit sink, in its
    transaction): delivered if anything was released to the addressed partner, else refused
    with the rules. Only a referral still ``made`` moves; a redelivered record is a no-op."""
    if doc.get("event_type") != events.PAYLOAD_TYPE:
        return None
    r = session.scalars(
        select(Referral)
        .where(
            Referral.agency_id == str(doc.get("agency_id")),
            Referral.event_id == str(doc.get("event_id")),
            Referral.partner_id == str(doc.get("partner_id")),
        )
        .with_for_update()
    ).first()
    if r is None or r.state != State.MADE.value:
        return None
    at = datetime.fromisoformat(str(doc["decided_at"]).replace("Z", "+00:00"))
    if doc.get("outcome") == "deny" or not doc.get("delivery_id"):
        withheld = doc.get("withheld") or []
        rules = sorted({*(doc.get("reasons") or []), *(x for w in withheld for x in w["rules"])})
        _refuse(session, r, rules or ["R1"], at)
        return r
    r.released = list(doc.get("released") or [])
    r.withheld = list(doc.get("withheld") or [])
    r.delivered_at = at
    _change(
        session,
        r,
        action=Action.DELIVER.value,
        source=r.state,
        target=State.DELIVERED,
        actor=Actor.ACCORD,
        by="accord",
        code=None,
        at=at,
    )
    return r


def abandon(*, session: Session, referral_id: str, now: datetime) -> None:
    """The payload could not be published (Kafka was away): the referral is withdrawn
    (``not_sent``) so nothing waits for a delivery that will not come."""
    r = _locked(session, referral_id)
    if r is not None and r.state == State.MADE.value:
        move(
            session=session,
            referral_id=referral_id,
            action=Action.WITHDRAW,
            party=Party(Actor.REFERRER, r.agency_id, "accord"),
            code="not_sent",
            now=now,
        )


# --- reading -----------------------------------------------------------------------------


def get(*, session: Session, referral_id: str, principal: Principal) -> Referral:
    r = session.get(Referral, referral_id)
    if r is None or not visible(r, principal):
        raise _not_found()
    return r


def listing(
    *,
    session: Session,
    principal: Principal,
    state: str | None = None,
    survivor_id: str | None = None,
    limit: int = 100,
) -> list[Referral]:
    q = select(Referral).order_by(Referral.made_at.desc(), Referral.id).limit(limit)
    if principal.role is Role.AGENCY:
        q = q.where(Referral.agency_id == principal.subject)
    elif principal.role is Role.SUPERVISOR:
        q = q.where(Referral.agency_id == principal.agency_id)
    elif principal.role is Role.PARTNER:
        q = q.where(Referral.partner_id == principal.subject, Referral.delivered_at.is_not(None))
    elif principal.role is not Role.COMPLIANCE:
        raise ReferralError(403, "This listing is for agencies, partners and compliance.")
    if state is not None:
        q = q.where(Referral.state == state)
    if survivor_id is not None:
        q = q.where(Referral.survivor_id == survivor_id)
    return list(session.scalars(q))


def for_survivor(*, session: Session, survivor_id: str) -> list[Referral]:
    """Every referral about a survivor (their disclosures view, R14)."""
    return list(
        session.scalars(
            select(Referral).where(Referral.survivor_id == survivor_id).order_by(Referral.made_at)
        )
    )


def open_note(*, session: Session, r: Referral) -> str | None:
    """The partner's decline note, for the referring agency only (never shared onward)."""
    if r.note is None:
        return None
    return atrest.open_text(
        session, r.note, survivor_id=r.survivor_id, purpose=NOTE_PURPOSE, row=r.id
    )


def unpublished(session: Session, *, limit: int = 200) -> list[tuple[Referral, ReferralChange]]:
    rows = session.scalars(
        select(ReferralChange)
        .where(ReferralChange.published.is_(False))
        .order_by(ReferralChange.referral_id, ReferralChange.seq)
        .limit(limit)
    )
    return [(c.referral, c) for c in rows]


def addressed_payloads(session: Session) -> list[Addressed]:
    """The payloads of referrals made and not yet decided: the relay's registry sends each to
    its addressee only (``SqlRegistry``'s ``addressed`` reader)."""
    return [
        Addressed(r.agency_id, r.event_id, r.survivor_id, r.partner_id, r.purpose)
        for r in session.scalars(select(Referral).where(Referral.state == "made"))
    ]
