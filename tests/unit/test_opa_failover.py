"""Several OPA servers behind one relay (``FailoverPolicy``, ``ACCORD_OPA_URLS``): pure logic,
with stand-in servers; the real servers are killed in ``accord faults`` (scale-out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.broker.pipeline.decide import FailoverPolicy, PolicyUnavailable
from services.broker.pipeline.model import JSON
from services.settings import Settings


class Server:
    """Answers its name for every item while up; ``PolicyUnavailable`` while down."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = True
        self.asked = 0

    async def decide(self, items: Sequence[JSON]) -> list[Any]:
        self.asked += 1
        if not self.up:
            raise PolicyUnavailable("OPA unavailable: ClientConnectorError")
        return [self.name] * len(items)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failovers(server: int) -> float:
    value = REGISTRY.get_sample_value("accord_opa_failovers_total", {"server": str(server)})
    return value or 0.0


async def test_the_first_server_answers_while_it_is_up() -> None:
    a, b = Server("a"), Server("b")
    policy = FailoverPolicy([a, b], cooldown_s=5, clock=Clock())
    assert await policy.decide([{}, {}]) == ["a", "a"]
    assert (a.asked, b.asked) == (1, 0)


async def test_a_down_server_rests_and_the_next_answers_until_it_is_back() -> None:
    a, b = Server("a"), Server("b")
    clock = Clock()
    policy = FailoverPolicy([a, b], cooldown_s=5, clock=clock)
    before = failovers(0)
    a.up = False
    assert await policy.decide([{}]) == ["b"]
    assert failovers(0) - before == 1
    assert policy.order() == [1, 0]
    assert await policy.decide([{}]) == ["b"]
    assert a.asked == 1  # resting: not asked again within the cooldown
    a.up = True
    clock.now += 5
    assert policy.order() == [0, 1]
    assert await policy.decide([{}]) == ["a"]


async def test_no_server_answering_fails_closed() -> None:
    a, b = Server("a"), Server("b")
    policy = FailoverPolicy([a, b], cooldown_s=5, clock=Clock())
    a.up = b.up = False
    with pytest.raises(PolicyUnavailable):
        await policy.decide([{}])
    # Both resting: both still asked, so the first to return answers at once.
    b.up = True
    assert await policy.decide([{}]) == ["b"]
    assert (a.asked, b.asked) == (2, 2)


async def test_a_broken_answer_is_the_policys_not_an_outage() -> None:
    class Broken(Server):
        async def decide(self, items: Sequence[JSON]) -> list[Any]:
            self.asked += 1
            return [None] * len(items)  # denied item by item by parse_decision (R1)

    a, b = Broken("a"), Server("b")
    policy = FailoverPolicy([a, b], cooldown_s=5, clock=Clock())
    assert await policy.decide([{}]) == [None]
    assert b.asked == 0


def test_opa_urls_are_the_servers_in_order_else_opa_url() -> None:
    s = Settings(opa_urls=" http://a:1 ,http://b:2,", opa_url="http://x:3")
    assert s.opa_base_urls == ["http://a:1", "http://b:2"]
    assert Settings(opa_urls="", opa_url="http://x:3").opa_base_urls == ["http://x:3"]
    with pytest.raises(ValueError):
        FailoverPolicy([], cooldown_s=1)
