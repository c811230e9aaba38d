"""The audit store on SQLite: append skips a key already chained, checkpoints sign the head,
retention prunes a prefix after a checkpoint and the rest still verifies from it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.audit import record, store
from services.audit.checkpoints import Checkpointer
from services.audit.models import AuditCheckpoint, AuditEntry
from services.db import Base, make_engine, make_sessionmaker, transaction

KEY = SigningKey(b"\x07" * 32)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


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


def test_append_is_once_per_key_and_verifies(sessions: sessionmaker[Session]) -> None:
    fill(sessions, 5)
    with transaction(sessions) as session:
        assert store.append_decision(session, decision(2)) is None  # redelivered
        record.review(session, decision(2), "decision:evt-2:p-1", "cmp", T0)
        assert not record.review(session, decision(2), "decision:evt-2:p-1", "cmp", T0)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 6
    report = store.verify_database(sessions, KEY.verify_key)
    assert report.ok and report.last_seq == 6


def test_checkpointer_signs_every_n_entries(sessions: sessionmaker[Session]) -> None:
    cp = Checkpointer(sessions, KEY, every=3, interval_s=3600)
    fill(sessions, 2)
    assert cp.tick() is None
    fill(sessions, 1)
    assert cp.tick() == 3
    assert cp.tick() is None  # nothing new
    fill(sessions, 1)
    assert cp.tick(force=True) == 4
    report = store.verify_database(sessions, KEY.verify_key)
    assert report.ok and report.checkpoints_verified == 2


def test_retention_prunes_a_prefix_and_the_rest_verifies(sessions: sessionmaker[Session]) -> None:
    fill(sessions, 10)
    with transaction(sessions) as session:
        pruned = store.prune(session, KEY, before=T0 + timedelta(days=4), now=T0)
    assert pruned == 4
    with sessions() as session:
        assert session.scalar(select(func.min(AuditEntry.seq))) == 5
        assert session.get(AuditCheckpoint, 4) is not None
    report = store.verify_database(sessions, KEY.verify_key)
    assert report.ok, report
    assert report.pruned_through == 4 and report.first_seq == 5
    fill(sessions, 1)  # appending goes on from the head
    report = store.verify_database(sessions, KEY.verify_key)
    assert report.ok and report.last_seq == 11
    with transaction(sessions) as session:  # a further prune moves the anchor forward
        assert store.prune(session, KEY, before=T0 + timedelta(days=6), now=T0) == 2
    assert store.verify_database(sessions, KEY.verify_key).pruned_through == 6
    with transaction(sessions) as session:  # deleting beyond the anchor is still caught
        session.execute(delete(AuditEntry).where(AuditEntry.seq == 7))
    report = store.verify_database(sessions, KEY.verify_key)
    assert report.first_broken is not None and report.first_broken.seq == 1


def test_accord_audit_verify_exits_1_on_a_broken_chain(
    sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    from typer.testing import CliRunner

    from services.cli import app

    fill(sessions, 4)
    monkeypatch.setenv("ACCORD_DATABASE_URL", f"sqlite:///{tmp_path / 'audit.db'}")
    monkeypatch.setenv("ACCORD_AUDIT_SIGNING_KEY", base64.b64encode(bytes(KEY)).decode())
    ok = CliRunner().invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "chain verified" in ok.output
    with transaction(sessions) as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(record="{}"))
    broken = CliRunner().invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "BROKEN seq 2: altered" in broken.output


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
