"""The audit hash chain, pure: canonical bytes, entry hashes, signed checkpoints, verification.

An entry is ``(kind, key, record)``: ``kind`` is decision / declaration / court_order /
consent_change / review / key_erasure / referral(_breach), ``key`` makes it unique (one's is
``decision:<event>:<partner>``) and ``record`` is a JSON document of names, ids and times,
never field values. Its hash is ``sha256(prev_hash || canonical(entry))`` where ``canonical``
is canonical JSON (sorted keys, no whitespace, UTF-8) of ``{"kind", "key", "record"}``. The
position (``seq``) is not hashed: an entry's place is fixed by the hash of the entry before
it, so a row moved elsewhere is told apart from an altered one.

Each entry is also signed by its appender (the process that wrote it: the audit sink, the
API's services, ``accord keys erase``) over its hash, with the appender key, which the
database's users do not hold: a forged entry, however well linked, carries no valid signature.

Checkpoints are *witnessed*: the checkpointer signs ``(kind, seq, head, count, at, prev)``,
``prev`` being the digest of the witnessed record before it, and publishes each record
outside the database (services/audit/witness.py), in the manner of Certificate Transparency's
signed tree heads. A ``prune`` record says retention removed the entries up to its ``seq``.

``verify`` walks the entries in ``seq`` order against the witnessed records and reports each
broken range (``seq``..``through``), first one first:

* ``altered``: the entry's content no longer gives its stored hash, or its searchable columns
  disagree with its record; or (seen from the next entry) it was altered and rehashed; or the
  range before a witnessed checkpoint no longer hashes to its head (rewritten and rehashed);
* ``forged``: the entry is not signed by an appender;
* ``deleted``: a gap in ``seq``, a prefix gone without a witnessed pruning, or a tail gone
  that a witnessed checkpoint covers;
* ``reordered``: the entry links to an entry that is elsewhere in the chain.

Entries after the last witnessed checkpoint are protected by their links and signatures only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import canonicaljson
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel

GENESIS = "0" * 64
Reason = Literal["altered", "forged", "deleted", "reordered"]
KINDS = (
    "decision",
    "declaration",
    "court_order",
    "consent_change",
    "review",
    "key_erasure",
    "referral",
    "referral_breach",
)
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
    signature: str | None = None  # hex, the appender's Ed25519 over entry_signed(entry_hash)


def entry_signed(h: str) -> bytes:
    """What an appender signs: the entry's hash, which fixes its content and its place."""
    return b"accord-audit-entry-v1:" + bytes.fromhex(h)


def sign_entry(key: SigningKey, h: str) -> str:
    return key.sign(entry_signed(h)).signature.hex()


def entry_signed_by(e: Entry, key: VerifyKey) -> bool:
    if not e.signature:
        return False
    try:
        key.verify(entry_signed(e.entry_hash), bytes.fromhex(e.signature))
    except (BadSignatureError, ValueError):
        return False
    return True


def key_id(verify_key: VerifyKey) -> str:
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


CheckpointKind = Literal["checkpoint", "prune"]


@dataclass(frozen=True)
class Checkpoint:
    """A witnessed record: a signed head (``checkpoint``), or a signed pruning (``prune``:
    entries up to ``seq`` were deleted by retention, entries before ``before``)."""

    kind: CheckpointKind
    seq: int  # the last entry it covers (a prune: the last entry deleted)
    head: str  # that entry's hash
    count: int  # entries appended up to it
    at: str  # ISO 8601, UTC
    prev: str  # digest() of the witnessed record before it; GENESIS for the first
    key_id: str
    signature: str  # hex, Ed25519 over payload()
    retention_days: int | None = None  # prune only: the configured retention
    before: str | None = None  # prune only: the cut-off (entries older were pruned)

    def fields(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": self.kind,
            "seq": self.seq,
            "head": self.head,
            "count": self.count,
            "at": self.at,
            "prev": self.prev,
            "key_id": self.key_id,
        }
        if self.kind == "prune":
            doc["retention_days"] = self.retention_days
            doc["before"] = self.before
        return doc

    def payload(self) -> bytes:
        return canonical(self.fields())

    def digest(self) -> str:
        """What the next record's ``prev`` holds: the hash of this one, signature included."""
        return hashlib.sha256(canonical({**self.fields(), "signature": self.signature})).hexdigest()

    def to_json(self) -> str:
        return canonical({**self.fields(), "signature": self.signature}).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        doc = json.loads(text)
        return cls(
            kind=doc["kind"],
            seq=int(doc["seq"]),
            head=str(doc["head"]),
            count=int(doc["count"]),
            at=str(doc["at"]),
            prev=str(doc["prev"]),
            key_id=str(doc["key_id"]),
            signature=str(doc["signature"]),
            retention_days=doc.get("retention_days"),
            before=doc.get("before"),
        )


def sign_checkpoint(
    key: Signer,
    *,
    seq: int,
    head: str,
    count: int,
    at: str,
    prev: str,
    kind: CheckpointKind = "checkpoint",
    retention_days: int | None = None,
    before: str | None = None,
) -> Checkpoint:
    unsigned = Checkpoint(kind, seq, head, count, at, prev, key.key_id, "", retention_days, before)
    return dataclasses.replace(unsigned, signature=key.sign(unsigned.payload()).hex())


class Signer(Protocol):
    """Signs checkpoints: a key file the checkpointer alone reads, or a KMS
    (services/audit/signing.py)."""

    @property
    def key_id(self) -> str: ...

    @property
    def verify_key(self) -> VerifyKey: ...

    def sign(self, payload: bytes) -> bytes: ...


class BrokenRange(BaseModel):
    """A broken range of the chain (named apart from the API's request ``Problem`` schema)."""

    seq: int  # the first entry of the broken range
    through: int  # its last
    reason: Reason
    detail: str


class CheckpointProblem(BaseModel):
    seq: int
    reason: Literal["bad_signature", "unknown_key", "broken_link", "head_mismatch", "missing_entry"]
    detail: str


class VerifyReport(BaseModel):
    ok: bool
    entries: int
    first_seq: int | None
    last_seq: int | None
    head: str | None
    checkpoints: int  # witnessed records read
    checkpoints_verified: int  # of those, validly signed
    # Entries up to this seq were pruned by retention (a witnessed, signed pruning).
    pruned_through: int | None
    first_broken: BrokenRange | None
    problems: list[BrokenRange]
    checkpoint_problems: list[CheckpointProblem]


@dataclass
class Verifier:
    """Streaming: ``feed`` entries in seq order, then ``finish`` with the witnessed records.

    Memory is one hash per entry (to tell a moved entry from a missing one), never records.
    """

    appender_key: VerifyKey | None
    # Signatures are checked after this seq only: up to the newest witnessed head, the witness
    # vouches for every entry (the checkpointer checked each signature before signing it).
    witnessed_through: int = 0
    _by_hash: dict[str, int] = field(default_factory=dict)
    _hashes: dict[int, str] = field(default_factory=dict)
    _problems: list[BrokenRange] = field(default_factory=list)
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
        elif e.seq > self.witnessed_through and (
            self.appender_key is None or not entry_signed_by(e, self.appender_key)
        ):
            self._problem(e.seq, "forged", "not signed with the appender key")
        self._by_hash.setdefault(e.entry_hash, e.seq)
        self._hashes[e.seq] = e.entry_hash
        prev = self._prev
        if prev is None:
            self._first = e
        elif e.seq != prev.seq + 1:
            missing = prev.seq + 1
            self._problem(
                missing, "deleted", f"entries {missing}..{e.seq - 1} are missing", e.seq - 1
            )
        elif e.prev_hash != prev.entry_hash:
            self._breaks.append((e.seq, prev.seq, e.prev_hash))
        self._prev = e

    def _problem(self, seq: int, reason: Reason, d: str, through: int | None = None) -> None:
        self._problems.append(
            BrokenRange(
                seq=seq, through=seq if through is None else through, reason=reason, detail=d
            )
        )

    def finish(
        self, witnessed: Iterable[Checkpoint], checkpoint_key: VerifyKey | None
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
        records = list(witnessed)
        cp_problems, good = check_witnessed(records, checkpoint_key)
        prune = max((c for c in good if c.kind == "prune"), key=lambda c: c.seq, default=None)
        self._check_start(prune)
        self._check_checkpoints([c for c in good if c.kind == "checkpoint"], prune)
        problems = sorted(self._problems, key=lambda p: (p.seq, p.through))
        last = self._prev
        return VerifyReport(
            ok=not problems and not cp_problems,
            entries=self._count,
            first_seq=self._first.seq if self._first else None,
            last_seq=last.seq if last else None,
            head=last.entry_hash if last else None,
            checkpoints=len(records),
            checkpoints_verified=len(good),
            pruned_through=prune.seq if prune else None,
            first_broken=problems[0] if problems else None,
            problems=problems,
            checkpoint_problems=cp_problems,
        )

    def _check_checkpoints(self, cps: list[Checkpoint], prune: Checkpoint | None) -> None:
        """Each witnessed head must still be the database's: a range rewritten and rehashed
        is named from the checkpoint before it; a tail deleted, up to the newest witness."""
        floor = prune.seq if prune else 0
        last_seq = self._prev.seq if self._prev else floor
        cps = sorted((c for c in cps if c.seq > floor), key=lambda c: c.seq)
        if cps and cps[-1].seq > last_seq:
            newest = cps[-1].seq
            self._problem(
                last_seq + 1,
                "deleted",
                f"entries {last_seq + 1}..{newest} are missing: witnessed checkpoints cover "
                f"up to seq {newest}",
                newest,
            )
        before = floor  # the seq of the last witnessed head checked
        for cp in cps:
            stored = self._hashes.get(cp.seq)
            if stored is not None and stored != cp.head:
                self._problem(
                    before + 1,
                    "altered",
                    f"entries {before + 1}..{cp.seq} no longer hash to the witnessed head "
                    f"at seq {cp.seq}",
                    cp.seq,
                )
            before = cp.seq

    def _check_start(self, prune: Checkpoint | None) -> None:
        """The chain starts at seq 1 from the genesis hash, or, after a witnessed pruning
        through seq N, at N + 1 linked to the pruned head."""
        first = self._first
        start, link = (prune.seq + 1, prune.head) if prune else (1, GENESIS)
        if first is None:
            return
        if first.seq < start:  # the pruning's deletions are not done yet: the head must match
            assert prune is not None
            if self._hashes.get(prune.seq, prune.head) != prune.head:
                self._problem(prune.seq, "altered", "its hash differs from the witnessed pruning")
            return
        if first.seq == start and first.prev_hash == link:
            return
        at = self._by_hash.get(first.prev_hash)
        if first.seq == start and at is not None:
            self._problem(start, "reordered", f"it follows entry {at}, found elsewhere")
        elif first.seq == start:
            self._problem(start, "altered", "the first entry does not link to the chain's start")
        else:
            self._problem(
                start,
                "deleted",
                f"entries {start}..{first.seq - 1} are missing and no witnessed pruning "
                "covers them",
                first.seq - 1,
            )


def check_witnessed(
    records: Iterable[Checkpoint], key: VerifyKey | None
) -> tuple[list[CheckpointProblem], list[Checkpoint]]:
    """The witnessed records' problems, and those validly signed. Each links to the one
    before it, so a record removed from (or inserted into) a kept copy is seen."""
    problems: list[CheckpointProblem] = []
    good: list[Checkpoint] = []
    kid = key_id(key) if key is not None else None
    prev = GENESIS
    for cp in records:
        problem = _check_signature(cp, key, kid)
        if problem is not None:
            problems.append(problem)
            continue
        if cp.prev != prev:
            problems.append(
                CheckpointProblem(
                    seq=cp.seq,
                    reason="broken_link",
                    detail="it does not follow the witnessed record before it",
                )
            )
        good.append(cp)
        prev = cp.digest()
    return problems, good


def _check_signature(
    cp: Checkpoint, verify_key: VerifyKey | None, kid: str | None
) -> CheckpointProblem | None:
    if verify_key is None or cp.key_id != kid:
        return CheckpointProblem(seq=cp.seq, reason="unknown_key", detail="not the audit key")
    try:
        verify_key.verify(cp.payload(), bytes.fromhex(cp.signature))
    except (BadSignatureError, ValueError):
        return CheckpointProblem(seq=cp.seq, reason="bad_signature", detail="signature invalid")
    return None


def follows(
    anchor: tuple[int, str], entries: Iterable[Entry], appender_key: VerifyKey
) -> BrokenRange | None:
    """Whether ``entries`` (seq order, from the anchor's seq or the one after it) follow from
    the witnessed ``anchor`` (seq, head): the checkpointer's check before it signs."""
    seq, head = anchor
    expected_prev = head
    for e in entries:
        if e.seq == seq:  # the anchor's own entry, if still there, is unchanged
            if e.entry_hash != head:
                return _range(seq, seq, "altered", "it no longer has the witnessed hash")
            continue
        if e.seq != seq + 1:
            return _range(seq + 1, e.seq - 1, "deleted", f"entries {seq + 1}..{e.seq - 1} missing")
        if e.prev_hash != expected_prev:
            return _range(
                e.seq, e.seq, "altered", "it does not link to the entry before it (or the witness)"
            )
        if entry_hash(e.prev_hash, e.kind, e.key, e.record) != e.entry_hash or (
            e.columns is not None and dict(e.columns) != index(e.kind, e.record)
        ):
            return _range(e.seq, e.seq, "altered", "its content does not give its hash")
        if not entry_signed_by(e, appender_key):
            return _range(e.seq, e.seq, "forged", "not signed with the appender key")
        seq, expected_prev = e.seq, e.entry_hash
    return None


def _range(seq: int, through: int, reason: Reason, detail: str) -> BrokenRange:
    return BrokenRange(seq=seq, through=through, reason=reason, detail=detail)


def verify(
    entries: Iterable[Entry],
    witnessed: Iterable[Checkpoint],
    checkpoint_key: VerifyKey | None,
    appender_key: VerifyKey | None,
) -> VerifyReport:
    records = list(witnessed)
    v = Verifier(appender_key, witnessed_through(records, checkpoint_key))
    for e in entries:
        v.feed(e)
    return v.finish(records, checkpoint_key)


def witnessed_through(records: Iterable[Checkpoint], key: VerifyKey | None) -> int:
    """The newest seq a validly signed, linked witnessed checkpoint covers (0: none)."""
    problems, good = check_witnessed(records, key)
    broken = {p.seq for p in problems}
    return max((c.seq for c in good if c.kind == "checkpoint" and c.seq not in broken), default=0)


def build(
    items: Iterable[tuple[str, str, Mapping[str, Any]]],
    appender: SigningKey,
    start: str = GENESIS,
) -> list[Entry]:
    """Entries from (kind, key, record) triples, linked from ``start`` and signed (tests)."""
    out: list[Entry] = []
    prev = start
    for seq, (kind, key, record) in enumerate(items, start=1):
        h = entry_hash(prev, kind, key, record)
        out.append(Entry(seq, kind, key, record, prev, h, signature=sign_entry(appender, h)))
        prev = h
    return out
