"""The one gate every notice to a survivor goes through (docs/safe-contact.md).

A notice Accord sends to a survivor, or asks someone (the survivor's agency, a partner) to
send or act on by contacting them, is first a row of the outbox ``survivor_notices``
(``enqueue``, in the transaction of the change that causes it, once per ``dedupe_key``). Only
``dispatch_due`` takes it out, and only as the survivor's safe-contact preference allows:

- "do not contact" (or a survivor whose data was erased): never sent, recorded ``suppressed``;
- outside the safe times: ``held`` until the next safe time, then judged again (a preference
  changed meanwhile counts);
- otherwise ``sent``, on the first channel of the preference, by a ``NoticeTransport``.

Each notice is decided in its own transaction with its row locked, so it is sent exactly once
across crashes, restarts and concurrent dispatchers: the transport's delivery and the status
change commit together (the default transport, ``AgencyInbox``, delivers by that very commit).

Adding a notice type: add a member to ``NoticeType`` (the do-not-contact test iterates the
enum, so it is covered at once), enqueue it where its cause is committed, and, if it can stop
applying before it is due, register a check with ``@still_applies(NoticeType.X)``.
Referral notices (services/referrals/notices.py) are members here like the others.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.contact import models
from services.contact.schemas import Channel, ContactPreferenceIn

log = logging.getLogger("accord.contact.gate")


class NoticeType(StrEnum):
    """Every kind of notice to (or about reaching) a survivor. Each goes through the gate."""

    # To the survivor's advocate, before a consent ends: ask the survivor whether to renew it
    # (time-limited consent, services/contact/renewal.py). Acting on it means contacting them.
    CONSENT_RENEWAL = "consent.renewal_due"
    # To the survivor: a supervisor declared imminent danger (R8) with ``tell_survivor``.
    IMMINENT_DANGER_DECLARED = "legal.imminent_danger_declared"
    # To the survivor (through their agency): a partner accepted their referral and will be
    # in touch (services/referrals/notices.py). Withdrawn if the referral ended meanwhile.
    REFERRAL_ACCEPTED = "referral.accepted"


class Status(StrEnum):
    PENDING = "pending"
    HELD = "held"
    SENT = "sent"
    SUPPRESSED = "suppressed"
    WITHDRAWN = "withdrawn"


OPEN = (Status.PENDING.value, Status.HELD.value)


# --- the decision, pure ------------------------------------------------------------------


class _Erased:
    """The survivor's preference cannot be read any more: their data key was erased."""


ERASED = _Erased()
Preference = ContactPreferenceIn | None | _Erased  # None: none recorded


@dataclass(frozen=True)
class Route:
    action: Literal["send", "hold", "suppress"]
    channel: Channel | None = None
    until: datetime | None = None
    reason: str | None = None


def _windows(pref: ContactPreferenceIn, now: datetime) -> list[tuple[datetime, datetime]]:
    """The safe windows from yesterday to eight days on, as UTC intervals, in order."""
    zone = ZoneInfo(pref.time_zone)
    today = now.astimezone(zone).date()
    out = []
    for offset in range(-1, 9):
        day = today + timedelta(days=offset)
        for w in pref.safe_times:
            if any(d.number == day.weekday() for d in w.days):
                start = datetime.combine(day, w.start_time, tzinfo=zone).astimezone(now.tzinfo)
                end = datetime.combine(day, w.end_time, tzinfo=zone).astimezone(now.tzinfo)
                out.append((start, end))
    return sorted(out)


def next_safe_time(pref: ContactPreferenceIn, now: datetime) -> datetime:
    """``now`` if it is a safe time, else the start of the next safe window (local wall time
    in the preference's zone, daylight saving included)."""
    if not pref.safe_times:
        return now
    windows = _windows(pref, now)
    for start, end in windows:
        if start <= now < end:
            return now
    return min(start for start, _ in windows if start > now)


def route(pref: Preference, now: datetime) -> Route:
    """What the gate does with a notice due at ``now`` for a survivor with ``pref``."""
    if isinstance(pref, _Erased):
        return Route("suppress", reason="erased")
    if pref is None:  # nothing recorded: the agency reaches them as it usually does
        return Route("send", reason="no_preference")
    if pref.do_not_contact:
        return Route("suppress", reason="do_not_contact")
    at = next_safe_time(pref, now)
    if at > now:
        return Route("hold", until=at, reason="outside_safe_times")
    return Route("send", channel=pref.channels[0])


# --- the outbox --------------------------------------------------------------------------


def enqueue(
    session: Session,
    *,
    survivor_id: str,
    type: NoticeType,
    dedupe_key: str,
    about: dict[str, str | int],
    now: datetime,
    due_at: datetime | None = None,
) -> models.SurvivorNotice:
    """Add a notice to the outbox in the caller's transaction; the same ``dedupe_key`` twice
    keeps the first (a cause committed twice, a retried request: one notice). ``about`` holds
    ids only. ``due_at``: not before then (default now)."""
    held = session.scalars(
        select(models.SurvivorNotice).where(models.SurvivorNotice.dedupe_key == dedupe_key)
    ).first()
    if held is not None:
        return held
    row = models.SurvivorNotice(
        id=f"ntc-{uuid.uuid4().hex[:20]}",
        dedupe_key=dedupe_key,
        survivor_id=survivor_id,
        type=type.value,
        about=dict(about),
        status=Status.PENDING.value,
        due_at=due_at or now,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


Applies = Callable[[Session, models.SurvivorNotice, datetime], bool]
_APPLIES: dict[NoticeType, Applies] = {}


def still_applies(kind: NoticeType) -> Callable[[Applies], Applies]:
    """Register the check that a notice of ``kind`` still applies when it falls due (a consent
    renewed or revoked meanwhile needs no renewal notice); one that does not is withdrawn."""

    def register(check: Applies) -> Applies:
        _APPLIES[kind] = check
        return check

    return register


class NoticeTransport(Protocol):
    """Delivers a notice the gate let through, inside the transaction that marks it sent (an
    exception rolls both back; the notice is tried again ``RETRY_AFTER`` later). A transport
    that leaves the database (an SMS gateway) must de-duplicate by ``notice.id``."""

    def deliver(
        self, session: Session, notice: models.SurvivorNotice, channel: Channel | None
    ) -> None: ...


class AgencyInbox:
    """The default transport: a sent notice is on the survivor's agency's list
    (``GET /v1/notices``), with the channel to use; the advocate reaches the survivor."""

    def deliver(
        self, session: Session, notice: models.SurvivorNotice, channel: Channel | None
    ) -> None:
        return None


@dataclass
class Dispatched:
    sent: int = 0
    held: int = 0
    suppressed: int = 0
    withdrawn: int = 0
    failed: int = 0  # not decided (rolled back), tried again ``RETRY_AFTER`` later

    @property
    def decided(self) -> int:
        return self.sent + self.held + self.suppressed + self.withdrawn


PreferenceReader = Callable[[Session, str], Preference]


def dispatch_due(
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    transport: NoticeTransport | None = None,
    limit: int = 100,
    preference: PreferenceReader,
) -> Dispatched:
    """Decide every open notice due at ``now`` (up to ``limit``), one transaction each, as the
    survivor's ``preference`` allows (``services/contact/service.read_preference``; the gate does
    not import it, which imports the gate). Each type's check applies once its module is imported
    (``services/contact/worker.py`` and ``accord notices`` import them all)."""
    out = Dispatched()
    transport = transport or AgencyInbox()
    with sessions() as session:
        due = list(
            session.scalars(
                select(models.SurvivorNotice.id)
                .where(models.SurvivorNotice.status.in_(OPEN), models.SurvivorNotice.due_at <= now)
                .order_by(models.SurvivorNotice.due_at, models.SurvivorNotice.id)
                .limit(limit)
            )
        )
    for notice_id in due:
        try:
            with sessions() as session, session.begin():
                row = session.scalars(
                    select(models.SurvivorNotice)
                    .where(models.SurvivorNotice.id == notice_id)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is None or row.status not in OPEN or row.due_at > now:
                    continue  # another dispatcher has it, or decided it already
                _decide(session, row, now, transport, preference, out)
        except Exception as exc:  # one notice's failure must not stop the others
            # Rolled back: the notice stays open. A transport down, or a row that does not open
            # (altered at rest), fails this notice alone; the id and the kind of failure only,
            # never what the notice is about. It is tried again after RETRY_AFTER, so notices
            # that keep failing never fill the round's ``limit`` and starve the others.
            out.failed += 1
            log.warning(
                "survivor notice not decided; tried again later",
                extra={"notice_id": notice_id, "error": type(exc).__name__},
            )
            _retry_later(sessions, notice_id, now + RETRY_AFTER)
    return out


RETRY_AFTER = timedelta(minutes=5)


def _retry_later(sessions: sessionmaker[Session], notice_id: str, at: datetime) -> None:
    """Move a failed notice's due time to ``at`` (still open: no other change). If even this
    fails (the database away), the notice is simply due again at the next round."""
    try:
        with sessions() as session, session.begin():
            session.execute(
                update(models.SurvivorNotice)
                .where(
                    models.SurvivorNotice.id == notice_id,
                    models.SurvivorNotice.status.in_(OPEN),
                )
                .values(due_at=at)
            )
    except Exception:  # the round goes on; logged once above
        return


def _decide(
    session: Session,
    row: models.SurvivorNotice,
    now: datetime,
    transport: NoticeTransport,
    preference: PreferenceReader,
    out: Dispatched,
) -> None:
    check = _APPLIES.get(NoticeType(row.type))
    if check is not None and not check(session, row, now):
        row.status, row.decided_at, row.reason = Status.WITHDRAWN.value, now, "no_longer_applies"
        out.withdrawn += 1
    else:
        r = route(preference(session, row.survivor_id), now)
        if r.action == "suppress":
            row.status, row.decided_at, row.reason = Status.SUPPRESSED.value, now, r.reason
            out.suppressed += 1
        elif r.action == "hold":
            assert r.until is not None
            row.status, row.due_at, row.reason = Status.HELD.value, r.until, r.reason
            out.held += 1
        else:
            transport.deliver(session, row, r.channel)
            row.status, row.decided_at = Status.SENT.value, now
            row.channel = r.channel.value if r.channel else None
            row.reason = r.reason
            out.sent += 1
    # Ids and the outcome only: never a preference, a channel's address or a code word.
    log.info(
        "survivor notice decided",
        extra={"notice_id": row.id, "notice_type": row.type, "status": row.status},
    )
