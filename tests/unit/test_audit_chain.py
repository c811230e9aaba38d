"""The audit hash chain: a valid chain verifies; any single alteration, deletion or swap is
reported at the right seq; forged or mismatched checkpoints fail."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from services.audit import chain
from services.audit.chain import Entry

KEY = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)
AT = "2026-11-27T10:00:00Z"


def decision(i: int) -> tuple[str, str, dict[str, Any]]:
    record: dict[str, Any] = {
        "event_id": f"evt-{i}",
        "partner_id": f"p-{i % 3}",
        "partner_type": "shelter",
        "agency_id": "harbor-outreach",
        "event_type": "accord.referral.made",
        "survivor_id": f"sv-{i % 5}",
        "outcome": "partial",
        "released": ["age"],
        "withheld": [{"field": "hiv_status", "rules": ["R6"]}],
        "basis": ["consent"],
        "reasons": ["R2", "R6"],
        "decided_at": f"2026-11-27T10:00:{i % 60:02d}Z",
    }
    return "decision", chain.decision_key(record["event_id"], record["partner_id"]), record


def make(n: int) -> list[Entry]:
    return chain.build(decision(i) for i in range(n))


def checkpoint(entries: list[Entry], seq: int, key: SigningKey = KEY) -> chain.Checkpoint:
    e = entries[seq - 1]
    return chain.sign_checkpoint(key, seq=seq, head=e.entry_hash, count=seq, at=AT)


def renumbered(entries: list[Entry]) -> list[Entry]:
    """Rows keep their seq column while their contents move (as a raw SQL swap would)."""
    return [dataclasses.replace(e, seq=i) for i, e in enumerate(entries, start=1)]


@given(st.integers(1, 40))
def test_a_valid_chain_verifies(n: int) -> None:
    entries = make(n)
    report = chain.verify(entries, [checkpoint(entries, n)], KEY.verify_key)
    assert report.ok, report
    assert report.entries == n and report.head == entries[-1].entry_hash
    assert report.checkpoints_verified == 1


@given(st.data())
def test_an_altered_entry_is_reported_at_its_seq(data: st.DataObject) -> None:
    entries = make(data.draw(st.integers(1, 30)))
    k = data.draw(st.integers(1, len(entries)))
    field = data.draw(st.sampled_from(["outcome", "partner_id", "released", "basis"]))
    e = entries[k - 1]
    record = dict(e.record)
    record[field] = ["survivor_name"] if field in ("released", "basis") else "allow-forged"
    entries[k - 1] = dataclasses.replace(e, record=record)
    report = chain.verify(entries, [], KEY.verify_key)
    assert not report.ok
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.reason) == (k, "altered")


@given(st.data())
def test_an_altered_and_rehashed_entry_is_reported(data: st.DataObject) -> None:
    entries = make(data.draw(st.integers(2, 30)))
    k = data.draw(st.integers(1, len(entries)))
    e = entries[k - 1]
    record = {**e.record, "outcome": "deny"}
    forged = chain.entry_hash(e.prev_hash, e.kind, e.key, record)
    entries[k - 1] = dataclasses.replace(e, record=record, entry_hash=forged)
    cps = [checkpoint(make(len(entries)), len(entries))]  # signed before the forgery
    report = chain.verify(entries, cps, KEY.verify_key)
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.reason) == (k, "altered")


@given(st.data())
def test_a_deleted_entry_is_reported_at_its_seq(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 30))
    entries = make(n)
    cps = [checkpoint(entries, n)]  # deleting the last entry is caught by the checkpoint
    k = data.draw(st.integers(1, n))
    del entries[k - 1]
    report = chain.verify(entries, cps, KEY.verify_key)
    assert not report.ok
    assert report.first_broken is not None
    assert report.first_broken.seq == k
    assert report.first_broken.reason == "deleted"


@given(st.data())
def test_a_swap_is_reported_as_reordered_at_the_first_moved_seq(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 30))
    entries = make(n)
    a = data.draw(st.integers(1, n - 1))
    b = data.draw(st.integers(a + 1, n))
    entries[a - 1], entries[b - 1] = entries[b - 1], entries[a - 1]
    report = chain.verify(renumbered(entries), [], KEY.verify_key)
    assert not report.ok
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.reason) == (a, "reordered")


def test_searchable_columns_that_disagree_with_the_record_are_altered() -> None:
    entries = make(5)
    entries = [dataclasses.replace(e, columns=chain.index(e.kind, e.record)) for e in entries]
    assert chain.verify(entries, [], KEY.verify_key).ok
    cols = {**chain.index(entries[2].kind, entries[2].record), "partner_id": "someone-else"}
    entries[2] = dataclasses.replace(entries[2], columns=cols)
    report = chain.verify(entries, [], KEY.verify_key)
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.reason) == (3, "altered")


def test_a_forged_checkpoint_fails() -> None:
    entries = make(6)
    good = checkpoint(entries, 3)
    forged_sig = dataclasses.replace(good, count=2)  # signed over count=3
    other_key = checkpoint(entries, 6, key=OTHER)
    other_key_relabelled = dataclasses.replace(other_key, key_id=good.key_id)
    wrong_head = chain.sign_checkpoint(KEY, seq=4, head=entries[2].entry_hash, count=4, at=AT)
    report = chain.verify(
        entries, [good, forged_sig, other_key, other_key_relabelled, wrong_head], KEY.verify_key
    )
    assert not report.ok
    reasons = sorted((p.seq, p.reason) for p in report.checkpoint_problems)
    assert reasons == [
        (3, "bad_signature"),
        (4, "head_mismatch"),
        (6, "bad_signature"),
        (6, "unknown_key"),
    ]
    assert report.checkpoints_verified == 2  # the good one and the wrong-head one


def test_a_wholly_rewritten_chain_is_caught_by_a_checkpoint() -> None:
    entries = make(8)
    cps = [checkpoint(entries, 5)]
    items = [(e.kind, e.key, dict(e.record)) for e in entries]
    items[1][2]["outcome"] = "deny"
    rewritten = chain.build(items)  # every hash recomputed after the change
    report = chain.verify(rewritten, cps, KEY.verify_key)
    assert not report.ok
    assert [(p.seq, p.reason) for p in report.checkpoint_problems] == [(5, "head_mismatch")]


def test_a_pruned_prefix_verifies_only_from_its_checkpoint() -> None:
    entries = make(10)
    cps = [checkpoint(entries, 4), checkpoint(entries, 10)]
    kept = entries[4:]
    assert chain.verify(kept, cps, KEY.verify_key, pruned_through=4).ok
    report = chain.verify(kept, cps, KEY.verify_key)  # not recorded as pruned: deleted
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.reason) == (1, "deleted")
    assert not chain.verify(entries[5:], cps, KEY.verify_key, pruned_through=4).ok


def test_canonical_bytes_ignore_key_order() -> None:
    a = chain.entry_hash(chain.GENESIS, "decision", "k", {"a": 1, "b": [1, 2]})
    b = chain.entry_hash(chain.GENESIS, "decision", "k", {"b": [1, 2], "a": 1})
    assert a == b
    assert (
        chain.content("review", "k", {"x": "é"})
        == b'{"key":"k","kind":"review","record":{"x":"\xc3\xa9"}}'
    )
