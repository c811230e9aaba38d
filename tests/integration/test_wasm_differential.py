"""Differential test of the in-process engine: the policy compiled to WebAssembly decides
exactly as the OPA server does (the reference), on the snapshot's inputs and on fresh random
ones, and hands to the server what it cannot evaluate.

The inputs come from the seeded generator of test_policy_differential (every event type,
partner type, purpose, age, jurisdiction, consent shape, legal basis, and malformed items).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from services.broker.pipeline import decide_wasm
from services.broker.pipeline.decide import OpaPolicy
from services.broker.pipeline.decide_wasm import WasmPolicy
from services.runtime import policy_engine
from services.settings import Settings
from tests.integration.test_policy_differential import comparable, generate, load_snapshot

pytestmark = pytest.mark.integration

FRESH = 3000


class CountingServer:
    """The OPA server as the fallback, remembering what it was asked."""

    def __init__(self, server: OpaPolicy) -> None:
        self._server = server
        self.asked: list[Any] = []

    async def decide(self, items: Sequence[Any]) -> list[Any]:
        self.asked.extend(items)
        return await self._server.decide(items)


Engines = tuple[WasmPolicy, OpaPolicy, CountingServer]


@pytest.fixture
async def engines(
    settings: Settings,
) -> AsyncIterator[Engines]:
    async with OpaPolicy(settings.opa_base_url, timeout_s=60) as server:
        fallback = CountingServer(server)
        wasm_settings = settings.model_copy(update={"policy_engine": "wasm"})
        wasm = await policy_engine(wasm_settings, fallback)
        assert isinstance(wasm, WasmPolicy)
        yield wasm, server, fallback


async def decide(policy: Any, items: Sequence[Any], chunk: int = 100) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(items), chunk):
        out.extend(await policy.decide(items[start : start + chunk]))
    return out


def differing(a: Sequence[Any], b: Sequence[Any]) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


async def test_wasm_decides_the_snapshot_inputs_as_the_server(
    engines: Engines,
) -> None:
    wasm, server, fallback = engines
    expected = load_snapshot()
    items = generate(20261124, len(expected))
    got = await decide(wasm, items)
    # Not vacuous: the module itself answered (nearly) everything, the server only the items
    # it cannot evaluate.
    assert len(fallback.asked) < 0.05 * len(items), f"{len(fallback.asked)} items fell back"
    bad = differing(await decide(server, items), got)
    assert not bad, f"{len(bad)}/{len(items)} differ from the server, first #{bad[0]}"
    bad = differing([e["decision"] for e in expected], [comparable(d) for d in got])
    assert not bad, f"{len(bad)}/{len(items)} differ from the snapshot, first #{bad[0]}"


async def test_wasm_decides_fresh_random_inputs_as_the_server(
    engines: Engines,
) -> None:
    wasm, server, fallback = engines
    seed = random.randrange(2**32)
    items = generate(seed, FRESH)
    got = await decide(wasm, items)
    assert len(fallback.asked) < 0.05 * len(items), f"seed {seed}: {len(fallback.asked)} fell back"
    bad = differing(await decide(server, items), got)
    assert not bad, f"seed {seed}: {len(bad)}/{FRESH} differ, first #{bad[0]}: " + json.dumps(
        items[bad[0]]
    )
    assert {b for d in got for b in d["basis"]} == {
        "consent",
        "mandated_reporting",
        "imminent_danger",
        "court_order",
    }


async def test_a_malformed_timestamp_is_undefined_in_the_module_as_in_the_server(
    engines: Engines,
) -> None:
    wasm, server, fallback = engines
    items = generate(7, 3)
    chunk = [items[0], dict(items[1], now="the day after tomorrow"), items[2]]
    got = await wasm.decide(chunk)
    assert fallback.asked == []  # the module decided it: the built-in's call is undefined
    assert got == await server.decide(chunk)
    assert got[1]["allow"] is False


async def test_an_item_the_module_cannot_evaluate_is_decided_by_the_server(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    wasm, server, fallback = engines
    items = generate(7, 3)
    odd = "2026-11-24T12:00:00.5Z"
    parse = decide_wasm.BUILTINS["time.parse_rfc3339_ns"]

    def failing(value: Any) -> int:
        if value == odd:
            raise RuntimeError("a host built-in failing unexpectedly")
        return int(parse(value))

    monkeypatch.setitem(decide_wasm.BUILTINS, "time.parse_rfc3339_ns", failing)
    chunk = [items[0], dict(items[1], now=odd), items[2]]
    got = await wasm.decide(chunk)
    assert fallback.asked == [chunk[1]]  # only that item, not the whole chunk
    assert got == await server.decide(chunk)
