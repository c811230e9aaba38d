"""The exactly-once tally of the fault suite and the crash tests: lost, duplicated, undecided."""

from __future__ import annotations

from typing import Any

from tools.bench.harness import Expected, table, tally
from tools.bench.relay_bench import opa_requests, top_frames

# e1 goes to a (fields x, y) and b (x); e2 to a only (x); b is refused e2.
EXPECTED = Expected(
    released={
        ("e1", "a"): ["x", "y"],
        ("e1", "b"): ["x"],
        ("e2", "a"): ["x"],
        ("e2", "b"): [],
    },
    delivered={("e1", "a"), ("e1", "b"), ("e2", "a")},
)


def decision(event: str, partner: str, released: list[str]) -> dict[str, Any]:
    return {
        "event_id": event,
        "partner_id": partner,
        "released": released,
        "delivery_id": f"{event}/{partner}" if released else None,
    }


def decisions() -> list[dict[str, Any]]:
    return [
        decision("e1", "a", ["y", "x"]),
        decision("e1", "b", ["x"]),
        decision("e2", "a", ["x"]),
        decision("e2", "b", []),
    ]


def got(event: str, *fields: str) -> dict[str, Any]:
    return {"id": event, "data": dict.fromkeys(fields, "v")}


def deliveries() -> dict[str, list[dict[str, Any]]]:
    return {"a": [got("e1", "x", "y"), got("e2", "x")], "b": [got("e1", "x")]}


def test_exactly_once_counts_nothing() -> None:
    t = tally(EXPECTED, decisions(), deliveries(), sent=2)
    assert (t.sent, t.decided, t.delivered) == (2, 4, 3)
    assert (t.duplicated, t.lost, t.undecided, t.mismatched) == (0, 0, 0, 0)
    assert t.ok and not t.examples


def test_a_delivery_twice_and_a_decision_twice_are_duplicates() -> None:
    ds = [*decisions(), decision("e2", "b", [])]
    ls = deliveries()
    ls["a"].append(got("e1", "x", "y"))
    t = tally(EXPECTED, ds, ls, sent=2)
    assert t.duplicated == 2
    assert (t.lost, t.undecided, t.delivered) == (0, 0, 3)
    assert not t.ok


def test_a_missing_delivery_and_a_missing_decision_are_lost() -> None:
    ls = deliveries()
    ls["b"] = []
    t = tally(EXPECTED, decisions()[:3], ls, sent=2)
    assert t.lost == 2
    assert (t.duplicated, t.undecided) == (0, 0)
    assert not t.ok


def test_a_delivery_without_its_decision_or_with_more_fields_is_undecided() -> None:
    ds = [d for d in decisions() if (d["event_id"], d["partner_id"]) != ("e1", "b")]
    ls = deliveries()
    ls["a"][1] = got("e2", "x", "y")  # y was never released to a for e2
    t = tally(EXPECTED, ds, ls, sent=2)
    assert t.undecided == 2
    assert t.lost == 1  # the decision record of (e1, b)
    assert not t.ok


def test_a_decision_other_than_recomputed_is_wrong() -> None:
    ds = decisions()
    ds[3] = decision("e2", "b", ["x"])
    ls = deliveries()
    ls["b"].append(got("e2", "x"))
    t = tally(EXPECTED, ds, ls, sent=2)
    assert t.mismatched == 1
    assert t.undecided == 0  # delivered as its (wrong) record said
    assert not t.ok


def test_table_has_one_row_per_fault_and_the_counts_in_order() -> None:
    t = tally(EXPECTED, decisions(), deliveries(), sent=2)
    lines = table([("relay SIGKILL", t)])
    assert lines[0].split() == [
        "fault",
        "sent",
        "decided",
        "delivered",
        "duplicated",
        "lost",
        "undecided",
        "wrong",
    ]
    assert lines[1].split() == ["relay", "SIGKILL", "2", "4", "3", "0", "0", "0", "0"]


def test_opa_request_sizes_are_each_batch_in_chunks() -> None:
    assert opa_requests([250, 100, 30], 100, 2) == {100: 2, 50: 3, 15: 2}
    assert opa_requests([0], 100, 2) == {}


def test_top_frames_counts_own_and_inclusive_samples(tmp_path: Any) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text("main;loop;decode 6\nmain;loop;encode 3\nmain;idle 1\n")
    lines = top_frames(raw, n=2)
    assert lines[0] == "10 samples; own time:"
    assert lines[1].split() == ["60.0%", "decode"]
    assert lines[2].split() == ["30.0%", "encode"]
    assert lines[4].split() == ["100.0%", "main"]
