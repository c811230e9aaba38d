"""Pure parts of the OPA latency benchmark: the statistics and the input mix."""

from __future__ import annotations

import pytest

from services.settings import Settings
from tools.bench.opa_latency import build_items, summarise


def test_summary_percentiles_and_rates() -> None:
    samples = [float(n) for n in range(1, 102)]  # 1 … 101 seconds, shuffled order irrelevant
    s = summarise(list(reversed(samples)), size=100)
    assert (s.p50_s, s.p95_s, s.p99_s) == (51.0, 96.0, 100.0)
    assert s.total_s == sum(samples)
    assert s.decisions_per_s == pytest.approx(101 * 100 / sum(samples))
    assert s.per_decision_s == pytest.approx(0.51)


def test_summary_needs_two_samples() -> None:
    with pytest.raises(ValueError):
        summarise([0.1], size=1)


def test_inputs_are_deterministic_and_varied() -> None:
    items = build_items(200, Settings())
    assert items == build_items(200, Settings())
    assert len({i["event"]["type"] for i in items}) >= 10
    assert len({i["partner"]["type"] for i in items}) >= 6
    assert {i["event"]["agency"]["jurisdiction"] for i in items} == {"state-a", "state-b"}
    ages = {i["event"]["survivor"]["age"] for i in items}
    assert None in ages and any(a is not None and a < 18 for a in ages)
    assert any(a is not None and a >= 18 for a in ages)
    assert any(i["declarations"] for i in items) and any(i["court_orders"] for i in items)
    assert any(not i["consents"] for i in items) and any(len(i["consents"]) > 1 for i in items)
