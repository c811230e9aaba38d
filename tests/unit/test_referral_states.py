"""The referral state machine (pure): every move from every state, who may take it, codes."""

from __future__ import annotations

import pytest

from services.referrals import states
from services.referrals.states import MOVES, OPEN, TERMINAL, Action, Actor, Refused, State, step


def test_the_happy_path_goes_made_to_completed() -> None:
    s = State.MADE
    for action, actor, code in [
        (Action.DELIVER, Actor.ACCORD, None),
        (Action.ACKNOWLEDGE, Actor.PARTNER, None),
        (Action.ACCEPT, Actor.PARTNER, None),
        (Action.COMPLETE, Actor.PARTNER, "service_provided"),
    ]:
        nxt = step(s, action, actor=actor, code=code)
        assert isinstance(nxt, State), nxt
        s = nxt
    assert s is State.COMPLETED


@pytest.mark.parametrize("current", list(State))
@pytest.mark.parametrize("action", list(Action))
def test_every_move_from_every_state_is_allowed_exactly_from_its_sources(
    current: State, action: Action
) -> None:
    move = MOVES[action]
    code = states.CODES.get(action, (None,))[0]
    got = step(current, action, actor=move.actor, code=code)
    if current in move.sources:
        assert got is move.target
    else:
        assert isinstance(got, Refused) and got.status == 409
        assert action.value in got.message and current.value in got.message


@pytest.mark.parametrize("action", list(Action))
def test_only_the_moves_actor_may_take_it(action: Action) -> None:
    move = MOVES[action]
    source = sorted(move.sources)[0]
    for actor in Actor:
        if actor is move.actor:
            continue
        got = step(source, action, actor=actor, code=states.CODES.get(action, (None,))[0])
        assert isinstance(got, Refused) and got.status == 403


def test_a_decline_needs_a_listed_reason_and_never_echoes_a_bad_one() -> None:
    missing = step(State.ACKNOWLEDGED, Action.DECLINE, actor=Actor.PARTNER)
    assert isinstance(missing, Refused) and missing.status == 422
    bad = step(State.ACKNOWLEDGED, Action.DECLINE, actor=Actor.PARTNER, code="CANARY-7731")
    assert isinstance(bad, Refused) and bad.status == 422 and "CANARY" not in bad.message
    assert step(State.ACKNOWLEDGED, Action.ACKNOWLEDGE, actor=Actor.PARTNER) == Refused(
        409,
        "A referral that is acknowledged cannot take 'acknowledge': it moves a referral from "
        "delivered to acknowledged.",
    )


def test_a_code_on_an_action_without_codes_is_refused() -> None:
    got = step(State.DELIVERED, Action.ACKNOWLEDGE, actor=Actor.PARTNER, code="no_capacity")
    assert isinstance(got, Refused) and got.status == 422


def test_terminal_and_open_states_partition_the_states() -> None:
    assert TERMINAL == {
        State.DECLINED,
        State.COMPLETED,
        State.CLOSED,
        State.WITHDRAWN,
        State.EXPIRED,
        State.REFUSED,
    }
    assert OPEN | TERMINAL == set(State) and not OPEN & TERMINAL
    assert states.REREFERABLE <= TERMINAL
