"""The audit hash chain against witnessed checkpoints: a valid chain verifies; any single
alteration, deletion or swap is reported at the right seq; a forged but well-linked entry, a
chain rewritten from some seq, a truncated tail and a prefix dropped without a witnessed
pruning are each reported as their first bad range; forged or unlinked witnessed records fail;
``follows`` (the checkpointer's check before signing) refuses each of these."""

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
APPENDER = SigningKey(b"\x03" * 32)
AT = "2026-11-27T10:00:00Z"


class KeySigner:
    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self.verify_key = key.verify_key
        self.key_id = chain.key_id(key.verify_key)

    def sign(self, payload: bytes) -> bytes:
        return bytes(self._key.sign(payload).signature)


def witness(
    entries: list[Entry], *seqs: int, key: SigningKey = KEY, prune: int | None = None
) -> list[chain.Checkpoint]:
    """Witnessed records, linked: a pruning through ``prune`` first, then checkpoints."""
    out: list[chain.Checkpoint] = []
    by_seq = {e.seq: e for e in entries}
    todo: list[tuple[str, int]] = [("prune", prune)] if prune else []
    for kind, seq in [*todo, *(("checkpoint", s) for s in seqs)]:
        out.append(
            chain.sign_checkpoint(
                KeySigner(key),
                kind="prune" if kind == "prune" else "checkpoint",
                seq=seq,
                head=by_seq[seq].entry_hash,
                count=seq,
                at=AT,
                prev=out[-1].digest() if out else chain.GENESIS,
                retention_days=30 if kind == "prune" else None,
                before=AT if kind == "prune" else None,
            )
        )
    return out


def verify(entries: list[Entry], witnessed: list[chain.Checkpoint]) -> chain.VerifyReport:
    return chain.verify(entries, witnessed, KEY.verify_key, APPENDER.verify_key)


def first(report: chain.VerifyReport) -> tuple[int, int, str]:
    assert report.first_broken is not None, report
    return report.first_broken.seq, report.first_broken.through, report.first_broken.reason


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
    return chain.build((decision(i) for i in range(n)), APPENDER)


def renumbered(entries: list[Entry]) -> list[Entry]:
    """Rows keep their seq column while their contents move (as a raw SQL swap would)."""
    return [dataclasses.replace(e, seq=i) for i, e in enumerate(entries, start=1)]


@given(st.integers(1, 40))
def test_a_valid_chain_verifies(n: int) -> None:
    entries = make(n)
    report = verify(entries, witness(entries, n))
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
    report = verify(entries, [])
    assert not report.ok
    assert first(report) == (k, k, "altered")


@given(st.data())
def test_an_altered_and_rehashed_entry_is_reported(data: st.DataObject) -> None:
    entries = make(data.draw(st.integers(2, 30)))
    k = data.draw(st.integers(1, len(entries)))
    e = entries[k - 1]
    record = {**e.record, "outcome": "deny"}
    forged = chain.entry_hash(e.prev_hash, e.kind, e.key, record)
    sig = chain.sign_entry(APPENDER, forged)  # even with the appender key
    entries[k - 1] = dataclasses.replace(e, record=record, entry_hash=forged, signature=sig)
    cps = witness(make(len(entries)), len(entries))  # witnessed before the forgery
    seq, through, reason = first(verify(entries, cps))
    # the next entry's link names it; the last one only the witnessed head's range holds
    assert reason == "altered" and seq <= k <= through
    assert (seq, through) == ((k, k) if k < len(entries) else (1, k))


@given(st.data())
def test_a_deleted_entry_is_reported_at_its_seq(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 30))
    entries = make(n)
    cps = witness(entries, n)  # deleting the last entry is caught by the witness
    k = data.draw(st.integers(1, n))
    del entries[k - 1]
    report = verify(entries, cps)
    assert not report.ok
    assert first(report) == (k, k, "deleted")


@given(st.data())
def test_a_swap_is_reported_as_reordered_at_the_first_moved_seq(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 30))
    entries = make(n)
    a = data.draw(st.integers(1, n - 1))
    b = data.draw(st.integers(a + 1, n))
    entries[a - 1], entries[b - 1] = entries[b - 1], entries[a - 1]
    report = verify(renumbered(entries), [])
    assert not report.ok
    assert first(report)[::2] == (a, "reordered")


def test_searchable_columns_that_disagree_with_the_record_are_altered() -> None:
    entries = make(5)
    entries = [dataclasses.replace(e, columns=chain.index(e.kind, e.record)) for e in entries]
    assert verify(entries, []).ok
    cols = {**chain.index(entries[2].kind, entries[2].record), "partner_id": "someone-else"}
    entries[2] = dataclasses.replace(entries[2], columns=cols)
    assert first(verify(entries, [])) == (3, 3, "altered")


@given(st.sampled_from(["unsigned", "other key", "signature of another entry"]))
def test_a_forged_but_well_linked_entry_is_reported(how: str) -> None:
    entries = make(6)
    items = [(e.kind, e.key, dict(e.record)) for e in entries]
    items.append(decision(99))
    forged = chain.build(items, APPENDER)[-1]  # linked to the head, hashed correctly
    sig = {
        "unsigned": None,
        "other key": chain.sign_entry(OTHER, forged.entry_hash),
        "signature of another entry": entries[0].signature,
    }[how]
    entries.append(dataclasses.replace(forged, signature=sig))
    report = verify(entries, witness(entries, 6))
    assert first(report) == (7, 7, "forged")
    anchor = (6, entries[5].entry_hash)
    problem = chain.follows(anchor, entries[5:], APPENDER.verify_key)
    assert problem is not None and (problem.seq, problem.reason) == (7, "forged")


def test_a_chain_rewritten_from_some_seq_is_named_from_the_checkpoint_before() -> None:
    entries = make(12)
    cps = witness(entries, 4, 8, 12)
    items = [(e.kind, e.key, dict(e.record)) for e in entries]
    items[5][2]["outcome"] = "deny"  # seq 6
    rewritten = chain.build(items, APPENDER)  # every hash recomputed and re-signed after it
    report = verify(rewritten, cps)
    assert not report.ok
    assert first(report) == (5, 8, "altered")  # after the witnessed head at 4, up to 8
    assert [(p.seq, p.through) for p in report.problems] == [(5, 8), (9, 12)]
    anchor = (12, entries[11].entry_hash)  # the checkpointer, anchored at the last witness
    problem = chain.follows(anchor, rewritten[11:], APPENDER.verify_key)
    assert problem is not None and (problem.seq, problem.reason) == (12, "altered")


def test_a_truncated_tail_is_reported_up_to_the_newest_witness() -> None:
    entries = make(10)
    cps = witness(entries, 5, 10)
    report = verify(entries[:7], cps)  # 8..10 deleted, audit_head reset
    assert first(report) == (8, 10, "deleted")
    report = verify(entries[:3], cps)
    assert first(report) == (4, 10, "deleted")


def test_a_pruned_prefix_verifies_only_with_a_witnessed_pruning() -> None:
    entries = make(10)
    kept = entries[4:]
    report = verify(kept, witness(entries, 10, prune=4))
    assert report.ok, report
    assert report.pruned_through == 4 and report.first_seq == 5
    # the database says pruned through 4, but no pruning was witnessed: a gap
    report = verify(kept, witness(entries, 10))
    assert first(report) == (1, 4, "deleted")
    # more deleted than the witnessed pruning covers
    assert first(verify(entries[6:], witness(entries, 10, prune=4))) == (5, 6, "deleted")
    # a witnessed pruning not carried out yet: the entries it names are still checked
    assert verify(entries, witness(entries, 10, prune=4)).ok


def test_forged_or_unlinked_witnessed_records_fail() -> None:
    entries = make(6)
    good = witness(entries, 2, 4, 6)
    forged_sig = dataclasses.replace(good[1], count=3)  # signed over count=4
    report = verify(entries, [good[0], forged_sig, good[2]])
    assert [(p.seq, p.reason) for p in report.checkpoint_problems] == [
        (4, "bad_signature"),
        (6, "broken_link"),  # it links to the real record at 4, which is not there
    ]
    other = witness(entries, 2, key=OTHER)
    relabelled = dataclasses.replace(other[0], key_id=good[0].key_id)
    report = verify(entries, [*other, relabelled])
    assert sorted((p.seq, p.reason) for p in report.checkpoint_problems) == [
        (2, "bad_signature"),
        (2, "unknown_key"),
    ]
    assert not verify(entries, [good[0], good[2]]).ok  # a line removed from a kept copy
    wrong_head = chain.sign_checkpoint(
        KeySigner(KEY), seq=4, head=entries[2].entry_hash, count=4, at=AT, prev=good[0].digest()
    )
    assert first(verify(entries, [good[0], wrong_head])) == (3, 4, "altered")
    assert verify(entries, good).ok


def test_records_round_trip_through_json() -> None:
    entries = make(4)
    for r in witness(entries, 4, prune=2):
        assert chain.Checkpoint.from_json(r.to_json()) == r


def test_canonical_bytes_ignore_key_order() -> None:
    a = chain.entry_hash(chain.GENESIS, "decision", "k", {"a": 1, "b": [1, 2]})
    b = chain.entry_hash(chain.GENESIS, "decision", "k", {"b": [1, 2], "a": 1})
    assert a == b
    assert (
        chain.content("review", "k", {"x": "é"})
        == b'{"key":"k","kind":"review","record":{"x":"\xc3\xa9"}}'
    )
