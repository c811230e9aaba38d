"""The referral's state machine, pure: states, actions, who may take them, and the codes.

::

    made ─deliver─▶ delivered ─acknowledge─▶ acknowledged ─accept─▶ accepted ─complete─▶ completed
      │                                           │                     └─close─▶ closed
      └─refuse─▶ refused                          └─decline─▶ declined
    withdraw (the referrer): made, delivered, acknowledged, accepted ─▶ withdrawn
    expire (the deadline worker): made, delivered, acknowledged ─▶ expired

``deliver`` and ``refuse`` are Accord's own: the relay's decision record says whether the
addressed partner received the referral (``refused``: the policy let nothing through, and the
referrer is told which rules). Every other action is a party's: the addressed partner moves
the referral forward, the referring agency withdraws it, the deadline worker expires it.
Terminal states accept no action; a declined, expired, withdrawn or refused referral may be
followed by a new referral that names it (``supersedes``): a re-referral.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    MADE = "made"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COMPLETED = "completed"
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    REFUSED = "refused"


class Action(StrEnum):
    DELIVER = "deliver"
    REFUSE = "refuse"
    ACKNOWLEDGE = "acknowledge"
    ACCEPT = "accept"
    DECLINE = "decline"
    COMPLETE = "complete"
    CLOSE = "close"
    WITHDRAW = "withdraw"
    EXPIRE = "expire"


class Actor(StrEnum):
    ACCORD = "accord"  # the relay's decision, through the audit sink
    PARTNER = "partner"  # the addressed partner
    REFERRER = "referrer"  # the referring agency
    DEADLINE = "deadline"  # the deadline worker


@dataclass(frozen=True)
class Move:
    action: Action
    sources: frozenset[State]
    target: State
    actor: Actor


MOVES: dict[Action, Move] = {
    m.action: m
    for m in (
        Move(Action.DELIVER, frozenset({State.MADE}), State.DELIVERED, Actor.ACCORD),
        Move(Action.REFUSE, frozenset({State.MADE}), State.REFUSED, Actor.ACCORD),
        Move(Action.ACKNOWLEDGE, frozenset({State.DELIVERED}), State.ACKNOWLEDGED, Actor.PARTNER),
        Move(Action.ACCEPT, frozenset({State.ACKNOWLEDGED}), State.ACCEPTED, Actor.PARTNER),
        Move(Action.DECLINE, frozenset({State.ACKNOWLEDGED}), State.DECLINED, Actor.PARTNER),
        Move(Action.COMPLETE, frozenset({State.ACCEPTED}), State.COMPLETED, Actor.PARTNER),
        Move(Action.CLOSE, frozenset({State.ACCEPTED}), State.CLOSED, Actor.PARTNER),
        Move(
            Action.WITHDRAW,
            frozenset({State.MADE, State.DELIVERED, State.ACKNOWLEDGED, State.ACCEPTED}),
            State.WITHDRAWN,
            Actor.REFERRER,
        ),
        Move(
            Action.EXPIRE,
            frozenset({State.MADE, State.DELIVERED, State.ACKNOWLEDGED}),
            State.EXPIRED,
            Actor.DEADLINE,
        ),
    )
}

TERMINAL: frozenset[State] = frozenset(State) - {s for m in MOVES.values() for s in m.sources}
# After these a new referral may name this one (a re-referral).
REREFERABLE: frozenset[State] = frozenset(
    {State.DECLINED, State.EXPIRED, State.WITHDRAWN, State.REFUSED}
)
# Open: the partner still owes an answer or the service (the deadline worker watches these).
OPEN: frozenset[State] = frozenset(State) - TERMINAL

# Why a partner declines (Primero's and Gravity SDOH's reasons, merged and coded). The
# partner's optional free text stays with Accord, sealed, and is never shared onward.
DECLINE_REASONS: tuple[str, ...] = (
    "no_capacity",
    "not_eligible",
    "service_not_offered",
    "outside_service_area",
    "survivor_declined",
    "unable_to_contact",
    "safety_concern",
    "duplicate",
    "other",
)
# How an accepted referral ended.
COMPLETION_OUTCOMES: tuple[str, ...] = (
    "service_provided",
    "service_partially_provided",
    "referred_onward",
)
CLOSURE_REASONS: tuple[str, ...] = (
    "survivor_withdrew",
    "lost_contact",
    "no_longer_needed",
    "moved_away",
    "other",
)
WITHDRAWAL_REASONS: tuple[str, ...] = (
    "no_longer_needed",
    "survivor_request",
    "made_in_error",
    "consent_withdrawn",
    "not_sent",
    "other",
)
# Which code list each action takes (none: no code).
CODES: dict[Action, tuple[str, ...]] = {
    Action.DECLINE: DECLINE_REASONS,
    Action.COMPLETE: COMPLETION_OUTCOMES,
    Action.CLOSE: CLOSURE_REASONS,
    Action.WITHDRAW: WITHDRAWAL_REASONS,
}
# Actions whose code is required (the others' is optional).
CODE_REQUIRED: frozenset[Action] = frozenset({Action.DECLINE, Action.COMPLETE, Action.CLOSE})


@dataclass(frozen=True)
class Refused:
    """Why an action cannot be taken; ``status`` is the HTTP answer (409: not in this state,
    403: not this actor's, 422: a bad code). The message names the action and the state,
    never anything the caller sent."""

    status: int
    message: str


def step(
    current: State, action: Action, *, actor: Actor, code: str | None = None
) -> State | Refused:
    """The state after ``action``, or why it is refused."""
    move = MOVES[action]
    if actor is not move.actor:
        return Refused(403, f"Only the {move.actor.value} may {action.value} a referral.")
    if current not in move.sources:
        allowed = ", ".join(sorted(s.value for s in move.sources))
        return Refused(
            409,
            f"A referral that is {current.value} cannot take '{action.value}': it moves a "
            f"referral from {allowed} to {move.target.value}.",
        )
    codes = CODES.get(action, ())
    if code is None and action in CODE_REQUIRED:
        return Refused(422, f"'{action.value}' needs a code: one of {', '.join(codes)}.")
    if code is not None and code not in codes:
        listed = ", ".join(codes) if codes else "none"
        return Refused(422, f"Not a code for '{action.value}'; the codes are: {listed}.")
    return move.target


def transition_name(source: State, target: State) -> str:
    return f"{source.value} → {target.value}"
