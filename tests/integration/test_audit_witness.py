"""Someone with write access to the database, on the real PostgreSQL and Kafka (issue 17): each
attack is detected by `accord audit verify` (against the witness topic) and by
GET /v1/audit/verify, naming the first bad range, and the checkpointer refuses to sign the
head it leaves:

* the chain rewritten and rehashed from some seq on (there is no checkpoint table to delete:
  the witnessed checkpoints are on a topic only the checkpointer writes);
* a forged entry, correctly linked, appended at the head;
* the newest entries deleted (a key_erasure among them) and audit_head reset;
* a prefix deleted with audit_head.pruned_through set, though retention is off.

Each test restores what it broke, so the session's chain verifies again afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka.errors import ProducerFenced
from nacl.signing import SigningKey
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.audit import chain, record, store
from services.audit.checkpoints import Checkpointer, Refused
from services.audit.cli import verify_command
from services.audit.models import AuditEntry, AuditHead
from services.audit.witness import read_topic
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import transaction
from services.kafka.client import AUDIT, kafka
from services.runtime import running_checkpointer
from services.settings import Settings
from tests.support.stack import kafka_ready, run_tag

pytestmark = pytest.mark.integration

COLUMNS = [c.name for c in AuditEntry.__table__.columns]


@pytest.fixture(scope="module")
def compliance_key(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        return issue_credential(session=session, role=Role.COMPLIANCE, subject="cmp-witness")


@pytest.fixture
async def compliance(api: str, compliance_key: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {compliance_key}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60) as client:
        yield client


def _append(sessions: sessionmaker[Session], n: int) -> None:
    """``n`` entries written as the services write them (signed with the appender key)."""
    run = uuid.uuid4().hex[:8]
    for i in range(n):
        with transaction(sessions) as session:
            store.append(session, "review", f"review:witness-{run}-{i}", {"i": i, "run": run})


def _head(sessions: sessionmaker[Session]) -> tuple[int, str, int | None]:
    with sessions() as session:
        h = session.get(AuditHead, store.HEAD_ID)
        assert h is not None
        return h.seq, h.hash, h.pruned_through


async def _quiet(sessions: sessionmaker[Session]) -> None:
    """Until nothing else appends (decisions of earlier modules still being chained)."""
    deadline = time.monotonic() + 30
    last = _head(sessions)[0]
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = _head(sessions)[0]
        if now == last:
            return
        last = now
    raise AssertionError("the audit chain kept growing")


async def _witnessed_head(checkpointer: Checkpointer) -> int:
    await checkpointer.tick(force=True)
    return checkpointer.anchor()[0]


@contextmanager
def restored(sessions: sessionmaker[Session], from_seq: int) -> Iterator[None]:
    """Put back every entry from ``from_seq`` on and the head row as they were."""
    with sessions() as session:
        rows = [
            {c: getattr(r, c) for c in COLUMNS}
            for r in session.scalars(select(AuditEntry).where(AuditEntry.seq >= from_seq))
        ]
    seq, h, pruned = _head(sessions)
    try:
        yield
    finally:
        with transaction(sessions) as session:
            session.execute(delete(AuditEntry).where(AuditEntry.seq >= from_seq))
            session.add_all(AuditEntry(**r) for r in rows)
            session.execute(
                text("UPDATE audit_head SET seq = :s, hash = :h, pruned_through = :p"),
                {"s": seq, "h": h, "p": pruned},
            )


async def _api_broken(compliance: httpx.AsyncClient) -> tuple[int, int, str]:
    resp = await compliance.get("/v1/audit/verify")
    assert resp.status_code == 200
    body = resp.json()
    assert not body["ok"], body
    b = body["first_broken"]
    return b["seq"], b["through"], b["reason"]


async def _cli(settings: Settings) -> tuple[int, list[str]]:
    out: list[str] = []
    code = await asyncio.to_thread(verify_command, settings, out.append)
    return code, out


async def _detected(
    compliance: httpx.AsyncClient, settings: Settings, expected: tuple[int, int, str]
) -> list[str]:
    assert await _api_broken(compliance) == expected
    code, out = await _cli(settings)
    assert code == 1
    seq, through, reason = expected
    broken = [line for line in out if line.startswith("BROKEN")]
    assert broken[0].startswith(f"BROKEN seq {seq}..{through}: {reason}"), out
    return out


async def _refused(checkpointer: Checkpointer, seq: int, reason: str) -> None:
    before = len(checkpointer.records)
    with pytest.raises(Refused) as refused:
        await checkpointer.tick(force=True)
    assert (refused.value.problem.seq, refused.value.problem.reason) == (seq, reason)
    assert len(checkpointer.records) == before  # nothing signed, nothing witnessed


async def _verifies_again(
    compliance: httpx.AsyncClient, checkpointer: Checkpointer, sessions: sessionmaker[Session]
) -> None:
    resp = await compliance.get("/v1/audit/verify")
    assert resp.json()["ok"], resp.json()
    _append(sessions, 1)
    assert await checkpointer.tick(force=True) is not None  # it follows again: signed


async def test_a_chain_rewritten_from_a_seq_is_detected(
    compliance: httpx.AsyncClient,
    sessions: sessionmaker[Session],
    checkpointer: Checkpointer,
    settings: Settings,
) -> None:
    await _quiet(sessions)
    s0 = await _witnessed_head(checkpointer)
    _append(sessions, 6)
    a = await _witnessed_head(checkpointer)
    _append(sessions, 6)
    b = await _witnessed_head(checkpointer)
    assert (a, b) == (s0 + 6, s0 + 12)
    k = s0 + 3
    with restored(sessions, k):
        # Rewrite every entry from k on and rehash the rest, as someone with psql would;
        # they cannot sign as an appender, so they sign with a key of their own.
        mine = SigningKey.generate()
        with transaction(sessions) as session:
            rows = list(
                session.scalars(
                    select(AuditEntry).where(AuditEntry.seq >= k).order_by(AuditEntry.seq)
                )
            )
            prev = rows[0].prev_hash
            for row in rows:
                doc = json.loads(row.record)
                if row.seq == k:
                    doc["forged"] = True
                row.record = chain.canonical(doc).decode()
                row.prev_hash = prev
                row.entry_hash = chain.entry_hash(prev, row.kind, row.entry_key, doc)
                row.signature = chain.sign_entry(mine, row.entry_hash)
                prev = row.entry_hash
            session.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
        # The first witnessed head after the rewrite no longer matches: the range from the
        # witnessed head before it.
        out = await _detected(compliance, settings, (s0 + 1, a, "altered"))
        assert any(f"BROKEN seq {a + 1}..{b}: altered" in line for line in out)
        _append(sessions, 1)  # even a genuine entry after it is not signed
        await _refused(checkpointer, b, "altered")
    await _verifies_again(compliance, checkpointer, sessions)


async def test_a_forged_linked_entry_is_detected_and_not_signed(
    compliance: httpx.AsyncClient,
    sessions: sessionmaker[Session],
    checkpointer: Checkpointer,
    settings: Settings,
) -> None:
    await _quiet(sessions)
    s0 = await _witnessed_head(checkpointer)
    with restored(sessions, s0 + 1):
        seq, h, _ = _head(sessions)
        doc = {
            "event_id": f"evt-forged-{uuid.uuid4().hex[:6]}",
            "partner_id": "metro-police",
            "partner_type": "law_enforcement",
            "agency_id": "harbor-outreach",
            "event_type": "accord.referral.made",
            "survivor_id": "sv-forged",
            "outcome": "deny",
            "released": [],
            "withheld": [],
            "basis": [],
            "reasons": ["R1"],
            "decided_at": store.ts(datetime.now(UTC)),
        }
        doc = json.loads(chain.canonical(doc))
        key = chain.decision_key(doc["event_id"], doc["partner_id"])
        forged = chain.entry_hash(h, "decision", key, doc)
        with transaction(sessions) as session:  # correctly linked and hashed, columns and all
            session.add(
                AuditEntry(
                    seq=seq + 1,
                    kind="decision",
                    entry_key=key,
                    record=chain.canonical(doc).decode(),
                    prev_hash=h,
                    entry_hash=forged,
                    signature=chain.sign_entry(SigningKey.generate(), forged),
                    **chain.index("decision", doc),
                )
            )
            session.execute(
                text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": seq + 1, "h": forged}
            )
        await _refused(checkpointer, seq + 1, "forged")
        await _detected(compliance, settings, (seq + 1, seq + 1, "forged"))
    await _verifies_again(compliance, checkpointer, sessions)


async def test_a_truncated_tail_is_detected(
    compliance: httpx.AsyncClient,
    sessions: sessionmaker[Session],
    checkpointer: Checkpointer,
    settings: Settings,
) -> None:
    await _quiet(sessions)
    s0 = await _witnessed_head(checkpointer)
    _append(sessions, 4)
    with transaction(sessions) as session:  # among the newest entries, an erasure
        record.key_erasure(
            session, f"sv-trunc-{uuid.uuid4().hex[:6]}", [1], "ops", datetime.now(UTC)
        )
    tip = await _witnessed_head(checkpointer)
    assert tip == s0 + 5
    with restored(sessions, s0 + 1):
        with transaction(sessions) as session:
            kinds = list(session.scalars(select(AuditEntry.kind).where(AuditEntry.seq > s0)))
            assert "key_erasure" in kinds
            session.execute(delete(AuditEntry).where(AuditEntry.seq > s0))
            row = session.get(AuditEntry, s0)
            assert row is not None
            session.execute(
                text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": s0, "h": row.entry_hash}
            )
        await _detected(compliance, settings, (s0 + 1, tip, "deleted"))
        await _refused(checkpointer, s0 + 1, "deleted")
    await _verifies_again(compliance, checkpointer, sessions)


async def test_a_prefix_dropped_as_if_pruned_is_detected(
    compliance: httpx.AsyncClient,
    sessions: sessionmaker[Session],
    checkpointer: Checkpointer,
    settings: Settings,
) -> None:
    assert settings.audit_retention_days == 0  # retention is off
    await _quiet(sessions)
    await _witnessed_head(checkpointer)
    through = checkpointer.records[0].seq  # a witnessed checkpoint's seq
    assert through > 1
    with restored(sessions, 1):
        with transaction(sessions) as session:
            session.execute(delete(AuditEntry).where(AuditEntry.seq <= through))
            session.execute(text("UPDATE audit_head SET pruned_through = :p"), {"p": through})
        out = await _detected(compliance, settings, (1, through, "deleted"))
        assert not any("pruned by retention" in line for line in out)
        resp = await compliance.get("/v1/audit/verify")
        assert resp.json()["pruned_through"] is None
    await _verifies_again(compliance, checkpointer, sessions)


async def test_a_second_checkpointer_fences_the_first(
    settings: Settings,
    sessions: sessionmaker[Session],
    kafka_topics: list[str],
    tmp_path: Path,
) -> None:
    """One active writer: a checkpointer that starts fences the one before it (Kafka's
    transactional id), reads every record it committed, and goes on from there."""
    run = f"{run_tag(settings)}.fence"
    own = settings.model_copy(
        update={
            "topic_audit_checkpoints": f"{run}.audit.checkpoints",
            "audit_checkpointer_transactional_id": f"{run_tag(settings)}-fence-checkpointer",
            "audit_witness_file": str(tmp_path / "fence.jsonl"),
        }
    )
    await kafka_ready(own)
    async with running_checkpointer(own) as first:
        await _quiet(sessions)
        signed = await first.tick(force=True)
        assert signed is not None
        async with running_checkpointer(own) as second:
            assert second.records == first.records == [signed]
            _append(sessions, 1)
            with pytest.raises(ProducerFenced):
                await first.tick(force=True)
            nxt = await second.tick(force=True)
            assert nxt is not None and nxt.prev == signed.digest()
        records = await read_topic(kafka(own, AUDIT), own.topic_audit_checkpoints)
    assert records == [signed, nxt]  # nothing from the fenced one after the take-over
