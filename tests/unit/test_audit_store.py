"""The audit store and the checkpointer on SQLite (the witness kept in memory here; the Kafka
witness is tested on the real broker in tests/integration/test_audit_witness.py): append
skips a key already chained and signs each entry; the checkpointer signs every n entries,
refuses a head that does not follow the last witnessed one, and prunes a prefix by retention
only after a witnessed pruning record, the rest still verifying from it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from prometheus_client import REGISTRY
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from services.audit import chain, health, record, store
from services.audit.chain import Checkpoint
from services.audit.checkpoints import Checkpointer, Refused
from services.audit.models import AuditEntry
from services.audit.witness import read_file
from services.db import Base, make_engine, make_sessionmaker, transaction

KEY = SigningKey(b"\x07" * 32)
APPENDER = SigningKey(b"\x08" * 32)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class KeySigner:
    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self.verify_key = key.verify_key
        self.key_id = chain.key_id(key.verify_key)

    def sign(self, payload: bytes) -> bytes:
        return bytes(self._key.sign(payload).signature)


class MemoryWitness:
    """Stands in for the witness topic (append-only, in order)."""

    def __init__(self) -> None:
        self.records: list[Checkpoint] = []

    async def start(self) -> list[Checkpoint]:
        return list(self.records)

    async def publish(self, record: Checkpoint) -> None:
        self.records.append(record)

    async def stop(self) -> None:
        pass


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    yield store.with_appender(make_sessionmaker(engine), APPENDER)
    engine.dispose()


def verified(sessions: sessionmaker[Session], witness: list[Checkpoint]) -> chain.VerifyReport:
    return store.verify_database(sessions, witness, KEY.verify_key, APPENDER.verify_key)


async def checkpointer(
    sessions: sessionmaker[Session],
    witness: MemoryWitness,
    tmp_path: Path,
    *,
    every: int = 3,
    retention_days: int = 0,
    now: datetime = T0,
) -> Checkpointer:
    cp = Checkpointer(
        sessions,
        KeySigner(KEY),
        APPENDER.verify_key,
        witness,
        every=every,
        interval_s=3600,
        retention_days=retention_days,
        witness_file=str(tmp_path / "witness.jsonl"),
        clock=lambda: now,
    )
    await cp.start()
    return cp


def decision(i: int) -> dict[str, object]:
    return {
        "event_id": f"evt-{i}",
        "partner_id": "p-1",
        "partner_type": "shelter",
        "survivor_id": "sv-1",
        "outcome": "allow",
        "released": ["age"],
        "withheld": [],
        "basis": ["consent"],
        "reasons": ["R2"],
        "consents": [{"id": "c-1", "version": 1}],
        "decided_at": store.ts(T0 + timedelta(days=i)),
    }


def fill(sessions: sessionmaker[Session], n: int) -> None:
    with sessions() as session:
        start = session.scalar(select(func.max(AuditEntry.seq))) or 0
    for i in range(start, start + n):
        with transaction(sessions) as session:
            store.append_decision(session, decision(i))


def test_append_is_once_per_key_signed_and_verifies(sessions: sessionmaker[Session]) -> None:
    fill(sessions, 5)
    with transaction(sessions) as session:
        assert store.append_decision(session, decision(2)) is None  # redelivered
        record.review(session, decision(2), "decision:evt-2:p-1", "cmp", T0)
        assert not record.review(session, decision(2), "decision:evt-2:p-1", "cmp", T0)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 6
        assert all(e.signature for e in store.iter_entries(session))
    report = verified(sessions, [])
    assert report.ok and report.last_seq == 6
    other = SigningKey(b"\x09" * 32).verify_key  # entries signed by someone else are forged
    bad = store.verify_database(sessions, [], KEY.verify_key, other)
    assert bad.first_broken is not None and bad.first_broken.reason == "forged"


async def test_checkpointer_signs_every_n_entries(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    witness = MemoryWitness()
    cp = await checkpointer(sessions, witness, tmp_path)
    fill(sessions, 2)
    assert await cp.tick() is None
    fill(sessions, 1)
    signed = await cp.tick()
    assert signed is not None and (signed.seq, signed.prev) == (3, chain.GENESIS)
    assert await cp.tick() is None  # nothing new
    fill(sessions, 1)
    signed = await cp.tick(force=True)
    assert signed is not None and (signed.seq, signed.prev) == (4, witness.records[0].digest())
    report = verified(sessions, witness.records)
    assert report.ok and report.checkpoints_verified == 2
    assert read_file(tmp_path / "witness.jsonl") == witness.records  # the kept copy
    restarted = await checkpointer(sessions, witness, tmp_path)  # anchors at the last record
    assert restarted.anchor() == (4, witness.records[-1].head)


async def test_checkpointer_refuses_a_head_that_does_not_follow(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    witness = MemoryWitness()
    cp = await checkpointer(sessions, witness, tmp_path, every=1)
    fill(sessions, 4)
    assert await cp.tick() is not None
    refusals = health.metrics()["accord_audit_checkpoint_refusals_total"]
    # a forged entry, linked to the head and hashed correctly, but not signed by an appender
    items = [(e.kind, e.key, dict(e.record)) for e in _entries(sessions)]
    forged = chain.build([*items, ("decision", "decision:evt-x:p-1", decision(50))], KEY)[-1]
    with transaction(sessions) as session:
        session.add(
            AuditEntry(
                seq=5,
                kind=forged.kind,
                entry_key=forged.key,
                record=chain.canonical(dict(forged.record)).decode(),
                prev_hash=forged.prev_hash,
                entry_hash=forged.entry_hash,
                signature=forged.signature,
                **chain.index(forged.kind, forged.record),
            )
        )
        session.execute(text("UPDATE audit_head SET seq = 5, hash = :h"), {"h": forged.entry_hash})
    with pytest.raises(Refused) as refused:
        await cp.tick(force=True)
    assert (refused.value.problem.seq, refused.value.problem.reason) == (5, "forged")
    assert not health.ready()
    assert health.metrics()["accord_audit_checkpoint_refusals_total"] == refusals + 1
    assert REGISTRY.get_sample_value("accord_audit_chain_follows") == 0  # its /metrics
    assert len(witness.records) == 1  # nothing signed
    # the forgery removed and the head restored: it follows again, and is signed
    with transaction(sessions) as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq == 5))
        session.execute(
            text("UPDATE audit_head SET seq = 4, hash = :h"), {"h": witness.records[0].head}
        )
    fill(sessions, 1)
    assert (await cp.tick()) is not None and health.ready()
    assert REGISTRY.get_sample_value("accord_audit_chain_follows") == 1
    # the tail deleted and audit_head reset below the witnessed head: refused
    with transaction(sessions) as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq >= 4))
        row = session.get(AuditEntry, 3)
        assert row is not None
        session.execute(text("UPDATE audit_head SET seq = 3, hash = :h"), {"h": row.entry_hash})
    with pytest.raises(Refused) as refused:
        await cp.tick(force=True)
    p = refused.value.problem
    assert (p.seq, p.through, p.reason) == (4, 5, "deleted")


def _entries(sessions: sessionmaker[Session]) -> list[chain.Entry]:
    with sessions() as session:
        return list(store.iter_entries(session))


async def test_retention_prunes_a_prefix_after_a_witnessed_pruning(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    fill(sessions, 10)  # entry i decided at T0 + i days
    witness = MemoryWitness()
    now = T0 + timedelta(days=34)  # 30 days' retention: entries 1..4 (days 0..3) are older
    cp = await checkpointer(sessions, witness, tmp_path, every=1, retention_days=30, now=now)
    await cp.tick()
    assert [(r.kind, r.seq) for r in witness.records] == [("checkpoint", 10), ("prune", 4)]
    assert witness.records[1].retention_days == 30
    with sessions() as session:
        assert session.scalar(select(func.min(AuditEntry.seq))) == 5
    report = verified(sessions, witness.records)
    assert report.ok, report
    assert report.pruned_through == 4 and report.first_seq == 5
    fill(sessions, 1)  # appending goes on from the head
    await cp.tick()
    assert verified(sessions, witness.records).ok
    with transaction(sessions) as session:  # deleting beyond the witnessed pruning is caught
        session.execute(delete(AuditEntry).where(AuditEntry.seq <= 6))
        session.execute(text("UPDATE audit_head SET pruned_through = 6"))
    report = verified(sessions, witness.records)
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.through) == (5, 6)


def test_accord_audit_verify_exits_1_on_a_broken_chain(
    sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from services.cli import app

    fill(sessions, 4)
    records = [
        chain.sign_checkpoint(
            KeySigner(KEY),
            seq=4,
            head=_entries(sessions)[-1].entry_hash,
            count=4,
            at="t",
            prev=chain.GENESIS,
        )
    ]
    kept = tmp_path / "kept.jsonl"
    kept.write_text("".join(r.to_json() + "\n" for r in records))
    monkeypatch.setenv("ACCORD_DATABASE_URL", f"sqlite:///{tmp_path / 'audit.db'}")
    monkeypatch.setenv("ACCORD_AUDIT_VERIFY_KEY", bytes(KEY.verify_key).hex())
    monkeypatch.setenv("ACCORD_AUDIT_APPENDER_VERIFY_KEY", bytes(APPENDER.verify_key).hex())
    args = ["audit", "verify", "--witness-file", str(kept)]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0 and "chain verified" in ok.output, ok.output
    with transaction(sessions) as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(record="{}"))
    broken = CliRunner().invoke(app, args)
    assert broken.exit_code == 1
    assert "BROKEN seq 2..2: altered" in broken.output


def test_reports_suppress_counts_below_the_policy_threshold() -> None:
    from services.audit import reports
    from services.settings import Settings

    policies = Settings().policies_dir
    assert reports.threshold(policies) == 11
    assert reports.threshold(policies, "state-a") == 11
    assert reports.threshold(policies, "atlantis") > 10**9  # unknown: every count suppressed
    refused: dict[str, Any] = {"partner_type": "law_enforcement", "released": [], "reasons": ["R4"]}
    refused["withheld"] = [{"field": "age", "rules": ["R4"]}]
    shared = {"partner_type": "shelter", "released": ["age"], "reasons": ["R2"], "withheld": []}
    report = reports.rules_report([refused] * 11 + [shared] * 10, 11)
    assert [(r.rule, r.partner_type, r.releases, r.refusals) for r in report.rows] == [
        ("R4", "law_enforcement", None, 11)
    ]  # the shelter row (10 releases) is left out whole
    changes = [(T0, "grant")] * 12 + [(T0, "revoke")] * 3
    rows = reports.consent_report(changes, "month", 11).rows
    assert [(r.period, r.grants, r.revocations) for r in rows] == [("2026-01", 12, None)]
