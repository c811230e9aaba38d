"""The audit hash chain, pure: canonical bytes, entry hashes, signed checkpoints, verification.

An entry is ``(kind, key, record)``: ``kind`` is decision / declaration / court_order /
consent_change / review / key_erasure, ``key`` makes it unique (a decision's is
``decision:<event>:<partner>``) and ``record`` is a JSON document of names, ids and times,
never field values. Its hash is ``sha256(prev_hash || canonical(entry))`` where ``canonical``
is canonical JSON (sorted keys, no whitespace, UTF-8) of ``{"kind", "key", "record"}``. The
position (``seq``) is not hashed: an entry's place is fixed by the hash of the entry before
it, so a row moved elsewhere is told apart from an altered one.

``verify`` walks the entries in ``seq`` order and reports the first broken one:

* ``altered``: the entry's content no longer gives its stored hash, or its searchable columns
  disagree with its record; or (seen from the next entry) it was altered and rehashed;
* ``deleted``: a gap in ``seq`` (a missing first entry, or one missing at a checkpoint's seq);
* ``reordered``: the entry links to an entry that is elsewhere in the chain.

and every checkpoint whose signature, key or head does not match. A chain whose every entry
was rewritten and rehashed from some point on is caught by the first signed checkpoint after
that point; entries after the last checkpoint are protected by links only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import canonicaljson
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel

GENESIS = "0" * 64
Reason = Literal["altered", "deleted", "reordered"]
KINDS = ("decision", "declaration", "court_order", "consent_change", "review", "key_erasure")
LEGAL_BASES = ("mandated_reporting", "imminent_danger", "court_order")


def canonical(value: Any) -> bytes:
    return bytes(canonicaljson.encode_canonical_json(value))


def content(kind: str, key: str, record: Mapping[str, Any]) -> bytes:
    return canonical({"kind": kind, "key": key, "record": dict(record)})


def entry_hash(prev_hash: str, kind: str, key: str, record: Mapping[str, Any]) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + content(kind, key, record)).hexdigest()


def decision_key(event_id: str, partner_id: str) -> str:
    return f"decision:{event_id}:{partner_id}"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _bars(values: Iterable[str]) -> str:
    """A list as ``|a|b|`` so that one value is found with ``LIKE '%|a|%'`` on any database."""
    items = sorted(set(values))
    return "|" + "|".join(items) + "|" if items else ""


def decision_rules(record: Mapping[str, Any]) -> list[str]:
    """Every rule a decision names: those that allowed or withheld anything."""
    rules = set(record.get("reasons") or [])
    for w in record.get("withheld") or []:
        rules.update(w.get("rules") or [])
    return sorted(rules)


def index(kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The searchable columns of an entry, derived from its record (verify checks they agree)."""
    at = _time(record.get("decided_at") if kind == "decision" else record.get("at"))
    return {
        "at": at,
        "event_id": record.get("event_id"),
        "partner_id": record.get("partner_id"),
        "agency_id": record.get("agency_id"),
        "partner_type": record.get("partner_type"),
        "event_type": record.get("event_type"),
        "survivor_id": record.get("survivor_id"),
        "outcome": record.get("outcome"),
        "basis": _bars(record.get("basis") or []),
        "rules": _bars(decision_rules(record)) if kind == "decision" else "",
    }


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    key: str
    record: Mapping[str, Any]
    prev_hash: str
    entry_hash: str
    columns: Mapping[str, Any] | None = None  # the stored searchable columns, if any


@dataclass(frozen=True)
class Checkpoint:
    seq: int  # the last entry it covers
    head: str  # that entry's hash
    count: int  # entries appended up to it
    at: str  # ISO 8601, UTC
    key_id: str
    signature: str  # hex, Ed25519 over checkpoint_payload(...)


def key_id(verify_key: VerifyKey) -> str:
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


def checkpoint_payload(seq: int, head: str, count: int, at: str, kid: str) -> bytes:
    return canonical({"seq": seq, "head": head, "count": count, "at": at, "key_id": kid})


def sign_checkpoint(key: SigningKey, *, seq: int, head: str, count: int, at: str) -> Checkpoint:
    kid = key_id(key.verify_key)
    sig = key.sign(checkpoint_payload(seq, head, count, at, kid)).signature.hex()
    return Checkpoint(seq=seq, head=head, count=count, at=at, key_id=kid, signature=sig)


class Problem(BaseModel):
    seq: int
    reason: Reason
    detail: str


class CheckpointProblem(BaseModel):
    seq: int
    reason: Literal["bad_signature", "unknown_key", "head_mismatch", "missing_entry"]
    detail: str


class VerifyReport(BaseModel):
    ok: bool
    entries: int
    first_seq: int | None
    last_seq: int | None
    head: str | None
    checkpoints: int
    checkpoints_verified: int
    # Entries before first_seq were pruned (retention) up to this signed checkpoint.
    pruned_through: int | None
    first_broken: Problem | None
    problems: list[Problem]
    checkpoint_problems: list[CheckpointProblem]


@dataclass
class Verifier:
    """Streaming: ``feed`` entries in seq order, then ``finish`` with the checkpoints.

    Memory is one hash per entry (to tell a moved entry from a missing one), never records.
    """

    _by_hash: dict[str, int] = field(default_factory=dict)
    _hashes: dict[int, str] = field(default_factory=dict)
    _problems: list[Problem] = field(default_factory=list)
    # seq of an entry whose prev_hash links to no neighbour, and that prev_hash
    _breaks: list[tuple[int, int | None, str]] = field(default_factory=list)
    _prev: Entry | None = None
    _first: Entry | None = None
    _count: int = 0

    def feed(self, e: Entry) -> None:
        self._count += 1
        recomputed = entry_hash(e.prev_hash, e.kind, e.key, e.record)
        if recomputed != e.entry_hash:
            self._problem(e.seq, "altered", "the entry's content does not give its stored hash")
        elif e.columns is not None and dict(e.columns) != index(e.kind, e.record):
            self._problem(e.seq, "altered", "the searchable columns disagree with the record")
        self._by_hash.setdefault(e.entry_hash, e.seq)
        self._hashes[e.seq] = e.entry_hash
        prev = self._prev
        if prev is None:
            self._first = e
        elif e.seq != prev.seq + 1:
            missing = prev.seq + 1
            self._problem(missing, "deleted", f"entries {missing}..{e.seq - 1} are missing")
        elif e.prev_hash != prev.entry_hash:
            self._breaks.append((e.seq, prev.seq, e.prev_hash))
        self._prev = e

    def _problem(self, seq: int, reason: Reason, d: str) -> None:
        self._problems.append(Problem(seq=seq, reason=reason, detail=d))

    def finish(
        self,
        checkpoints: Iterable[Checkpoint],
        verify_key: VerifyKey | None,
        *,
        pruned_through: int | None = None,
    ) -> VerifyReport:
        for seq, prev_seq, link in self._breaks:
            at = self._by_hash.get(link)
            if at is not None and at != prev_seq:
                self._problem(seq, "reordered", f"it follows entry {at}, found elsewhere")
            elif link == GENESIS:
                self._problem(seq, "reordered", "the chain's first entry was moved here")
            elif prev_seq is not None:
                self._problem(
                    prev_seq,
                    "altered",
                    f"entry {seq} does not link to it: altered and rehashed, "
                    "or entries were deleted and the rest renumbered",
                )
        cps = sorted(checkpoints, key=lambda c: c.seq)
        cp_problems: list[CheckpointProblem] = []
        good: dict[int, Checkpoint] = {}
        kid = key_id(verify_key) if verify_key is not None else None
        for cp in cps:
            problem = _check_signature(cp, verify_key, kid)
            if problem is not None:
                cp_problems.append(problem)
                continue
            good[cp.seq] = cp
            stored = self._hashes.get(cp.seq)
            first_seq = self._first.seq if self._first else None
            pruned_away = pruned_through is not None and cp.seq <= pruned_through
            if stored is None and not pruned_away and (first_seq is None or cp.seq >= first_seq):
                cp_problems.append(
                    CheckpointProblem(
                        seq=cp.seq, reason="missing_entry", detail="no entry at its seq"
                    )
                )
                self._problem(cp.seq, "deleted", "a signed checkpoint covers this missing entry")
            elif stored is not None and stored != cp.head:
                cp_problems.append(
                    CheckpointProblem(
                        seq=cp.seq, reason="head_mismatch", detail="the entry's hash differs"
                    )
                )
                self._problem(cp.seq, "altered", "its hash differs from the signed checkpoint")
        pruned = self._check_start(good, pruned_through)
        problems = sorted(self._problems, key=lambda p: p.seq)
        last = self._prev
        return VerifyReport(
            ok=not problems and not cp_problems,
            entries=self._count,
            first_seq=self._first.seq if self._first else None,
            last_seq=last.seq if last else None,
            head=last.entry_hash if last else None,
            checkpoints=len(cps),
            checkpoints_verified=len(good),
            pruned_through=pruned,
            first_broken=problems[0] if problems else None,
            problems=problems,
            checkpoint_problems=cp_problems,
        )

    def _check_start(
        self, good: Mapping[int, Checkpoint], pruned_through: int | None
    ) -> int | None:
        """The chain starts at seq 1 from the genesis hash, or, when retention pruned the
        entries up to ``pruned_through``, right after the signed checkpoint at that seq."""
        first = self._first
        if first is None:
            return pruned_through
        if first.seq == 1 and first.prev_hash == GENESIS:
            return None
        anchor = good.get(first.seq - 1)
        if pruned_through == first.seq - 1 and anchor and anchor.head == first.prev_hash:
            return anchor.seq
        at = self._by_hash.get(first.prev_hash)
        if first.seq == 1 and at is not None:
            self._problem(1, "reordered", f"it follows entry {at}, found elsewhere")
        elif first.seq == 1:
            self._problem(1, "altered", "the first entry does not start from the genesis hash")
        else:
            self._problem(
                1, "deleted", f"entries 1..{first.seq - 1} are missing and no checkpoint covers"
            )
        return None


def _check_signature(
    cp: Checkpoint, verify_key: VerifyKey | None, kid: str | None
) -> CheckpointProblem | None:
    if verify_key is None or cp.key_id != kid:
        return CheckpointProblem(seq=cp.seq, reason="unknown_key", detail="not the audit key")
    try:
        verify_key.verify(
            checkpoint_payload(cp.seq, cp.head, cp.count, cp.at, cp.key_id),
            bytes.fromhex(cp.signature),
        )
    except (BadSignatureError, ValueError):
        return CheckpointProblem(seq=cp.seq, reason="bad_signature", detail="signature invalid")
    return None


def verify(
    entries: Iterable[Entry],
    checkpoints: Iterable[Checkpoint],
    verify_key: VerifyKey | None,
    *,
    pruned_through: int | None = None,
) -> VerifyReport:
    v = Verifier()
    for e in entries:
        v.feed(e)
    return v.finish(checkpoints, verify_key, pruned_through=pruned_through)


def build(items: Iterable[tuple[str, str, Mapping[str, Any]]], start: str = GENESIS) -> list[Entry]:
    """Entries from (kind, key, record) triples, linked from ``start`` (tests, tools)."""
    out: list[Entry] = []
    prev = start
    for seq, (kind, key, record) in enumerate(items, start=1):
        h = entry_hash(prev, kind, key, record)
        out.append(Entry(seq, kind, key, record, prev, h))
        prev = h
    return out
