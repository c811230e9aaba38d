"""The audit chain on the real stack: every decision record the relay wrote is chained once and
matches; declarations, court orders and consent changes are chained in their own transaction;
raw SQL that alters, deletes or reorders one row is reported at that row by the endpoint and the
CLI; the compliance API searches, exports, reports (small counts suppressed) and reviews, and
answers 403 to every other role."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.audit import chain, store
from services.audit.checkpoints import Checkpointer
from services.audit.cli import run_verify, verify_command
from services.audit.models import AuditEntry
from services.audit.signing import appender_verify_key
from services.audit.sink import audit_sink
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import transaction
from services.decision_records import split_decisions
from services.kafka.client import AUDIT, kafka
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.events import (
    PARTNERS,
    REFERRAL,
    cloudevent,
    consent_change,
    inbound_record,
    publish_and_collect,
)
from tests.support.keys import AUDIT_KEY
from tests.support.registry import RULE_PARTNERS, permit

pytestmark = pytest.mark.integration

SCREENING = {
    "survivor_name": "F. Example",
    "age": 15,
    "gender": "f",
    "exploitation_type": "labor",
    "screening_result": "positive",
    "screening_tool": "STAR",
    "safety_status": "unsafe",
    "reporting_agency": "harbor-outreach",
    "reported_at": "2026-11-24T10:00:00Z",
    "service_needs": ["housing"],
}
VALUES = ("Zephyrine", "Quillfeather", "+1-555-0100", "needs safe housing")


@pytest.fixture(scope="module")
def keys(sessions: sessionmaker[Session]) -> dict[str, str]:
    with transaction(sessions) as session:
        return {
            "compliance": issue_credential(session=session, role=Role.COMPLIANCE, subject="cmp-1"),
            "advocate": issue_credential(
                session=session, role=Role.ADVOCATE, subject="adv-a", agency_id="harbor-outreach"
            ),
            "supervisor": issue_credential(
                session=session,
                role=Role.SUPERVISOR,
                subject="sup-a",
                agency_id="harbor-outreach",
            ),
            "agency": issue_credential(
                session=session, role=Role.AGENCY, subject="harbor-outreach"
            ),
            "partner": issue_credential(
                session=session, role=Role.PARTNER, subject="lighthouse-shelter"
            ),
            "admin": issue_credential(session=session, role=Role.ADMIN, subject="root"),
        }


@pytest.fixture
async def compliance(api: str, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {keys['compliance']}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60) as client:
        yield client


def client(api: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def chained(
    sessions: sessionmaker[Session], keys: set[str], timeout_s: float = 30
) -> dict[str, AuditEntry]:
    """Wait until the audit sink has chained every key; return those rows."""
    deadline = time.monotonic() + timeout_s
    while True:
        with sessions() as session:
            rows = list(session.scalars(select(AuditEntry).where(AuditEntry.entry_key.in_(keys))))
        if len(rows) == len(keys) or time.monotonic() > deadline:
            return {r.entry_key: r for r in rows}
        await asyncio.sleep(0.2)


def decision_keys(records: list[dict[str, Any]]) -> set[str]:
    return {chain.decision_key(r["event_id"], r["partner_id"]) for r in records}


async def publish_many(
    settings: Settings, producer: AIOKafkaProducer, events: list[dict[str, Any]], per_event: int
) -> list[dict[str, Any]]:
    ids = {e["id"] for e in events}
    async with tail(kafka(settings, AUDIT), settings.topic_decisions) as decided:
        for e in events:
            await producer.send(
                settings.topic_inbound, inbound_record(settings, e), key=e["subject"].encode()
            )
        await producer.flush()
        records = await collect(
            decided, until=len(events) * per_event, timeout_s=60, settle_s=1, split=split_decisions
        )
    return [r for r in records if r["event_id"] in ids]


@pytest.fixture(scope="module")
async def referrals(
    settings: Settings,
    producer: AIOKafkaProducer,
    relay: None,
    api: str,
    sessions: sessionmaker[Session],
) -> list[dict[str, Any]]:
    """Twelve referrals of survivors who consent to nothing (so law enforcement is refused
    twelve times, above the R15 threshold), and one with consent to shelters and health."""
    events = [cloudevent("harbor-outreach", f"sv-aud-{i}", REFERRAL) for i in range(12)]
    records = await publish_many(settings, producer, events, len(PARTNERS))
    consenting = f"sv-aud-consent-{uuid.uuid4().hex[:6]}"
    await producer.send_and_wait(
        settings.topic_consents,
        consent_change(
            settings,
            consenting,
            permit(["shelter", "health"], ["service_referral", "care_coordination"], ["*"]),
        ),
        key=consenting.encode(),
    )
    out = await publish_and_collect(
        settings, producer, cloudevent("harbor-outreach", consenting, REFERRAL), PARTNERS
    )
    records += list(out.decisions.values())
    assert len(records) == 13 * len(PARTNERS)
    got = await chained(sessions, decision_keys(records))
    assert len(got) == len(records)
    return records


async def test_every_decision_record_is_chained_once_and_matches(
    referrals: list[dict[str, Any]], sessions: sessionmaker[Session]
) -> None:
    keys = decision_keys(referrals)
    rows = await chained(sessions, keys)
    by_key = {chain.decision_key(r["event_id"], r["partner_id"]): r for r in referrals}
    for key, row in rows.items():
        assert json.loads(row.record) == by_key[key]
        assert row.kind == "decision" and row.partner_id == by_key[key]["partner_id"]
        assert not any(v in row.record for v in VALUES)  # never a field value
    with sessions() as session:
        counts = session.execute(
            select(AuditEntry.event_id, AuditEntry.partner_id, func.count())
            .where(AuditEntry.kind == "decision")
            .group_by(AuditEntry.event_id, AuditEntry.partner_id)
            .having(func.count() > 1)
        ).all()
    assert counts == []
    outcomes = {r["outcome"] for r in referrals}
    assert {"deny", "partial"} <= outcomes or {"deny", "allow"} <= outcomes


async def test_a_redelivered_topic_is_chained_only_once(
    settings: Settings, referrals: list[dict[str, Any]], sessions: sessionmaker[Session]
) -> None:
    """A second sink reading the whole decisions topic from the start appends nothing new."""
    with sessions() as session:
        before = session.scalar(select(func.count()).select_from(AuditEntry))
    again = audit_sink(
        kafka(settings, AUDIT),
        settings.topic_decisions,
        f"{settings.relay_group}-audit-redelivery-{uuid.uuid4().hex[:6]}",
        sessions,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(again.run(stop))
    try:
        await asyncio.sleep(1)
        await again.catch_up(timeout_s=30)
    finally:
        stop.set()
        await task
    with sessions() as session:
        after = session.scalar(select(func.count()).select_from(AuditEntry))
    assert after == before


async def test_declarations_court_orders_and_consent_changes_are_chained(
    api: str, keys: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    survivor = f"sv-aud-{uuid.uuid4().hex[:8]}"
    async with client(api, keys["advocate"]) as adv, client(api, keys["supervisor"]) as sup:
        assert (await adv.post("/v1/survivors", json={"survivor_id": survivor})).status_code == 201
        grant = await adv.post(
            f"/v1/survivors/{survivor}/consents",
            json={
                "provisions": [
                    permit(["shelter"], ["service_referral"], ["*"]),
                ],
                "evidence": {"kind": "form_reference", "reference": "form #1 at the agency"},
            },
        )
        assert grant.status_code == 201, grant.text
        cid = grant.json()["id"]
        revoked = await adv.post(f"/v1/survivors/{survivor}/consents/{cid}/revoke")
        assert revoked.status_code == 200
        declared = await sup.post(
            f"/v1/survivors/{survivor}/declarations",
            json={"justification": "Credible threat reported by the survivor today."},
        )
        assert declared.status_code == 201
        did = declared.json()["id"]
        assert (
            await sup.post(f"/v1/survivors/{survivor}/declarations/{did}/end")
        ).status_code == 200
        order = await sup.post(
            f"/v1/survivors/{survivor}/court-orders",
            json={
                "reference": "Case 2026-SECRET-REF",
                "court": "Secret County Court",
                "recipient": "metro-police",
                "fields": ["survivor_name"],
                "expires_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
                "justification": "A confidential justification text.",
            },
        )
        assert order.status_code == 201
        oid = order.json()["id"]
    with sessions() as session:
        rows = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.survivor_id == survivor)
                .order_by(AuditEntry.seq)
            )
        )
    assert [(r.kind, r.entry_key) for r in rows] == [
        ("consent_change", f"consent:{cid}:1"),
        ("consent_change", f"consent:{cid}:2"),
        ("declaration", f"declaration:{did}:declared"),
        ("declaration", f"declaration:{did}:ended"),
        ("court_order", f"court_order:{oid}"),
    ]
    assert [json.loads(r.record)["op"] for r in rows[:2]] == ["grant", "revoke"]
    for r in rows:
        for secret in ("SECRET", "Credible threat", "confidential"):
            assert secret not in r.record


async def test_compliance_search_filters_and_pages(
    compliance: httpx.AsyncClient, referrals: list[dict[str, Any]]
) -> None:
    survivor = referrals[0]["survivor_id"]
    page = (await compliance.get("/v1/audit/decisions", params={"survivor": survivor})).json()
    assert {i["record"]["partner_id"] for i in page["items"]} == set(PARTNERS)
    police = await compliance.get(
        "/v1/audit/decisions",
        params={"partner_type": "law_enforcement", "rule": "R4", "outcome": "deny", "limit": 5},
    )
    assert police.status_code == 200
    body = police.json()
    assert len(body["items"]) == 5 and body["next_after"] is not None
    for item in body["items"]:
        record = item["record"]
        assert record["partner_type"] == "law_enforcement" and record["outcome"] == "deny"
        assert "R4" in chain.decision_rules(record)
    after = await compliance.get(
        "/v1/audit/decisions",
        params={"partner_type": "law_enforcement", "after": body["next_after"], "limit": 5},
    )
    assert all(i["seq"] > body["next_after"] for i in after.json()["items"])
    since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    future = await compliance.get("/v1/audit/decisions", params={"from": since})
    assert future.json()["items"] == []
    bad = await compliance.get("/v1/audit/decisions", params={"partner": "x%' OR 1=1"})
    assert bad.status_code == 422


async def test_export_streams_csv_and_json_lines(
    compliance: httpx.AsyncClient, referrals: list[dict[str, Any]]
) -> None:
    ids = {r["event_id"] for r in referrals}
    lines = []
    async with compliance.stream(
        "GET", "/v1/audit/decisions/export", params={"format": "jsonl", "agency": "harbor-outreach"}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        async for line in resp.aiter_lines():
            if line:
                lines.append(json.loads(line))
    exported = {(x["record"]["event_id"], x["record"]["partner_id"]) for x in lines}
    assert {(r["event_id"], r["partner_id"]) for r in referrals} <= exported
    resp = await compliance.get(
        "/v1/audit/decisions/export", params={"format": "csv", "partner": "metro-police"}
    )
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    mine = [r for r in rows if r["event_id"] in ids]
    assert len(mine) == 13 and {r["partner_id"] for r in rows} == {"metro-police"}
    assert all(r["outcome"] == "deny" and "R4" in r["withheld"] for r in mine)
    assert not any(v in resp.text for v in VALUES)


async def test_reports_show_only_counts_at_or_above_the_threshold(
    compliance: httpx.AsyncClient, referrals: list[dict[str, Any]]
) -> None:
    police = [r for r in referrals if r["partner_id"] == "metro-police"]
    since = min(r["decided_at"] for r in police)
    report = (await compliance.get("/v1/audit/reports/rules", params={"from": since})).json()
    assert report["threshold"] == 11
    rows = {(r["rule"], r["partner_type"]): r for r in report["rows"]}
    assert rows[("R4", "law_enforcement")]["refusals"] >= 12
    for r in report["rows"]:
        for n in (r["releases"], r["refusals"]):
            assert n is None or n >= 11
    one = await compliance.get(
        "/v1/audit/reports/rules", params={"survivor": referrals[0]["survivor_id"]}
    )
    assert one.json()["rows"] == []  # a single survivor's counts are all below 11
    consents = await compliance.get("/v1/audit/reports/consents", params={"period": "week"})
    assert consents.status_code == 200
    for r in consents.json()["rows"]:
        for n in (r["grants"], r["amendments"], r["revocations"]):
            assert n is None or n >= 11


async def test_legal_basis_releases_await_review_and_reviewing_is_chained(
    settings: Settings,
    producer: AIOKafkaProducer,
    relay: None,
    compliance: httpx.AsyncClient,
    sessions: sessionmaker[Session],
) -> None:
    watched = [p["id"] for p in RULE_PARTNERS]
    event = cloudevent(
        "harbor-outreach",
        f"sv-aud-{uuid.uuid4().hex[:8]}",
        SCREENING,
        type="accord.screening.completed",
    )
    out = await publish_and_collect(settings, producer, event, watched)
    cps = out.decisions["rules-cps-a"]
    assert cps["basis"] == ["mandated_reporting"]
    key = chain.decision_key(event["id"], "rules-cps-a")
    row = (await chained(sessions, {key}))[key]
    pending = (await compliance.get("/v1/audit/reviews", params={"limit": 500})).json()
    assert row.seq in {i["seq"] for i in pending["items"]}
    assert all(
        set(i["record"]["basis"]) & set(chain.LEGAL_BASES)
        or "age_unknown" in i["record"].get("flags", [])
        for i in pending["items"]
    )
    done = await compliance.post(f"/v1/audit/reviews/{row.seq}")
    assert done.status_code == 201, done.text
    assert (await compliance.post(f"/v1/audit/reviews/{row.seq}")).status_code == 409
    police = chain.decision_key(event["id"], "rules-police-a")
    refused = (await chained(sessions, {police}))[police]
    assert (await compliance.post(f"/v1/audit/reviews/{refused.seq}")).status_code == 404
    pending = (await compliance.get("/v1/audit/reviews", params={"limit": 500})).json()
    assert row.seq not in {i["seq"] for i in pending["items"]}
    with sessions() as session:
        review = session.get(AuditEntry, done.json()["review_seq"])
        assert review is not None and review.kind == "review"
        assert json.loads(review.record)["by"] == "cmp-1"


async def test_an_unknown_age_where_a_report_was_due_awaits_review(
    settings: Settings,
    producer: AIOKafkaProducer,
    relay: None,
    compliance: httpx.AsyncClient,
    sessions: sessionmaker[Session],
) -> None:
    """Neither age nor date_of_birth: nothing goes to child welfare (no report without a
    basis), but that decision is flagged age_unknown and waits in the review queue, denied as
    it is, until compliance marks it reviewed; other partners' decisions are not flagged."""
    watched = [p["id"] for p in RULE_PARTNERS]
    no_age = {k: v for k, v in SCREENING.items() if k not in ("age", "date_of_birth")}
    survivor = f"sv-aud-{uuid.uuid4().hex[:8]}"
    event = cloudevent("harbor-outreach", survivor, no_age, type="accord.screening.completed")
    out = await publish_and_collect(settings, producer, event, watched)
    cps = out.decisions["rules-cps-a"]
    assert (cps["outcome"], cps["flags"], cps["review_required"]) == ("deny", ["age_unknown"], True)
    key, other = (chain.decision_key(event["id"], p) for p in ("rules-cps-a", "rules-vs"))
    rows = await chained(sessions, {key, other})
    pending = (await compliance.get("/v1/audit/reviews", params={"limit": 500})).json()
    seqs = {i["seq"] for i in pending["items"]}
    assert rows[key].seq in seqs
    assert rows[other].seq not in seqs  # not flagged: victim services get no mandated report
    done = await compliance.post(f"/v1/audit/reviews/{rows[key].seq}")
    assert done.status_code == 201, done.text
    assert (await compliance.post(f"/v1/audit/reviews/{rows[other].seq}")).status_code == 404
    pending = (await compliance.get("/v1/audit/reviews", params={"limit": 500})).json()
    assert rows[key].seq not in {i["seq"] for i in pending["items"]}


async def test_the_survivors_disclosures_are_read_from_the_chain(
    api: str, keys: dict[str, str], referrals: list[dict[str, Any]], sessions: sessionmaker[Session]
) -> None:
    released = [r for r in referrals if r["released"]]
    survivor = released[0]["survivor_id"]
    with transaction(sessions) as session:  # the SQL copy is gone: only the chain remains
        session.execute(
            text("DELETE FROM disclosures WHERE survivor_id = :s AND kind = 'release'"),
            {"s": survivor},
        )
    async with client(api, keys["advocate"]) as adv:
        assert (await adv.post("/v1/survivors", json={"survivor_id": survivor})).status_code == 201
        history = (await adv.get(f"/v1/survivors/{survivor}/disclosures")).json()
    got = {(h["event_id"], h["partner_id"], tuple(h["fields"])) for h in history}
    assert got == {
        (r["event_id"], r["partner_id"], tuple(r["released"]))
        for r in released
        if r["survivor_id"] == survivor
    }
    assert all(h["kind"] == "release" and h["categories"] for h in history)
    assert not any(v in json.dumps(history) for v in VALUES)


async def test_every_compliance_endpoint_refuses_other_roles(
    api: str, keys: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=api) as anon:
        paths = [
            (method.upper(), path.replace("{seq}", "1"))
            for path, ops in (await anon.get("/openapi.json")).json()["paths"].items()
            if path.startswith("/v1/audit")
            for method in ops
        ]
        assert len(paths) >= 7
        for method, path in paths:
            assert (await anon.request(method, path)).status_code == 401
    for role in ("advocate", "supervisor", "agency", "partner", "admin"):
        async with client(api, keys[role]) as other:
            for method, path in paths:
                resp = await other.request(method, path)
                assert resp.status_code == 403, (role, method, path)


async def test_concurrent_appenders_are_serialised(
    sessions: sessionmaker[Session], checkpointer: Checkpointer, settings: Settings
) -> None:
    """Eight writers at once on PostgreSQL: every entry gets the next seq and links to the one
    before (the head row lock), and the chain still verifies."""
    run = uuid.uuid4().hex[:6]

    def writer(w: int) -> None:
        for i in range(15):
            with transaction(sessions) as session:
                store.append(session, "review", f"test:{run}:{w}:{i}", {"w": w, "i": i})

    await asyncio.gather(*(asyncio.to_thread(writer, w) for w in range(8)))
    with sessions() as session:
        seqs = list(
            session.scalars(
                select(AuditEntry.seq).where(AuditEntry.entry_key.like(f"test:{run}:%"))
            )
        )
    assert len(seqs) == 120
    await checkpointer.tick(force=True)
    report = store.verify_database(
        sessions, checkpointer.records, AUDIT_KEY.verify_key, appender_verify_key(settings)
    )
    assert report.ok, report


# --- tampering (each test restores the row it broke, so the session's chain stays valid) ----


async def _verify(compliance: httpx.AsyncClient) -> dict[str, Any]:
    resp = await compliance.get("/v1/audit/verify")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


async def _signed_checkpoint(checkpointer: Checkpointer) -> int:
    """The head, signed and witnessed now by the session's checkpointer."""
    await checkpointer.tick(force=True)
    seq = checkpointer.anchor()[0]
    assert seq > 0
    return seq


async def _cli(settings: Settings, *args: Any) -> tuple[int, list[str]]:
    out: list[str] = []
    code = await asyncio.to_thread(verify_command, settings, out.append, *args)
    return code, out


async def test_a_valid_chain_verifies(
    compliance: httpx.AsyncClient,
    referrals: list[dict[str, Any]],
    checkpointer: Checkpointer,
    settings: Settings,
) -> None:
    await _signed_checkpoint(checkpointer)
    report = await _verify(compliance)
    assert report["ok"], report
    assert report["checkpoints_verified"] >= 1 and report["entries"] >= len(referrals)
    assert report["key_id"] == chain.key_id(AUDIT_KEY.verify_key)
    code, out = await _cli(settings)
    assert code == 0 and out[-1] == "chain verified"
    # and against the compliance officer's kept copy of the witness
    code, out = await _cli(settings, Path(settings.audit_witness_file))
    assert code == 0 and out[-1] == "chain verified", out


def _middle(sessions: sessionmaker[Session], referrals: list[dict[str, Any]]) -> AuditEntry:
    keys = sorted(decision_keys(referrals))
    with sessions() as session:
        rows = list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.entry_key.in_(keys)).order_by(AuditEntry.seq)
            )
        )
    return rows[len(rows) // 2]


async def test_an_altered_row_is_reported(
    compliance: httpx.AsyncClient,
    referrals: list[dict[str, Any]],
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    row = _middle(sessions, referrals)
    forged = row.record.replace('"outcome":"deny"', '"outcome":"allow"').replace(
        '"outcome":"partial"', '"outcome":"allow"'
    )
    assert forged != row.record
    with transaction(sessions) as session:
        session.execute(
            text("UPDATE audit_entries SET record = :r WHERE seq = :s"),
            {"r": forged, "s": row.seq},
        )
    try:
        report = await _verify(compliance)
        assert not report["ok"]
        assert report["first_broken"]["seq"] == row.seq
        assert report["first_broken"]["reason"] == "altered"
        code, out = await _cli(settings)
        assert code == 1
        assert any(line.startswith(f"BROKEN seq {row.seq}..{row.seq}: altered") for line in out)
        # the searchable columns alone: the record is intact but the row says another partner
        with transaction(sessions) as session:
            session.execute(
                text("UPDATE audit_entries SET record = :r, partner_id = 'x' WHERE seq = :s"),
                {"r": row.record, "s": row.seq},
            )
        report = await _verify(compliance)
        assert (report["first_broken"]["seq"], report["first_broken"]["reason"]) == (
            row.seq,
            "altered",
        )
    finally:
        with transaction(sessions) as session:
            session.execute(
                text("UPDATE audit_entries SET record = :r, partner_id = :p WHERE seq = :s"),
                {"r": row.record, "p": row.partner_id, "s": row.seq},
            )
    assert (await _verify(compliance))["ok"]


async def test_a_deleted_row_is_reported(
    compliance: httpx.AsyncClient,
    referrals: list[dict[str, Any]],
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    row = _middle(sessions, referrals)
    values = {c.name: getattr(row, c.name) for c in AuditEntry.__table__.columns}
    with transaction(sessions) as session:
        session.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": row.seq})
    try:
        report = await _verify(compliance)
        assert (report["first_broken"]["seq"], report["first_broken"]["reason"]) == (
            row.seq,
            "deleted",
        )
        cli = await asyncio.to_thread(run_verify, settings)
        assert cli.first_broken == chain.BrokenRange.model_validate(report["first_broken"])
    finally:
        with transaction(sessions) as session:
            session.add(AuditEntry(**values))
    assert (await _verify(compliance))["ok"]


async def test_the_deleted_last_row_is_reported_by_its_checkpoint(
    compliance: httpx.AsyncClient,
    sessions: sessionmaker[Session],
    referrals: list[dict[str, Any]],
    checkpointer: Checkpointer,
) -> None:
    seq = await _signed_checkpoint(checkpointer)
    with sessions() as session:
        last = session.get(AuditEntry, seq)
        assert last is not None
        values = {c.name: getattr(last, c.name) for c in AuditEntry.__table__.columns}
    with transaction(sessions) as session:
        session.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": seq})
    try:
        report = await _verify(compliance)
        broken = report["first_broken"]
        assert (broken["seq"], broken["through"], broken["reason"]) == (seq, seq, "deleted")
    finally:
        with transaction(sessions) as session:
            session.add(AuditEntry(**values))
    assert (await _verify(compliance))["ok"]


async def test_reordered_rows_are_reported(
    compliance: httpx.AsyncClient,
    referrals: list[dict[str, Any]],
    sessions: sessionmaker[Session],
) -> None:
    row = _middle(sessions, referrals)
    a, b = row.seq, row.seq + 1
    # Swap the two rows' places: move a aside, b to a, a to b.
    swap = [
        ("UPDATE audit_entries SET seq = -1 WHERE seq = :a", {"a": a}),
        ("UPDATE audit_entries SET seq = :a WHERE seq = :b", {"a": a, "b": b}),
        ("UPDATE audit_entries SET seq = :b WHERE seq = -1", {"b": b}),
    ]
    with transaction(sessions) as session:
        for sql, params in swap:
            session.execute(text(sql), params)
    try:
        report = await _verify(compliance)
        assert (report["first_broken"]["seq"], report["first_broken"]["reason"]) == (
            a,
            "reordered",
        )
    finally:
        with transaction(sessions) as session:
            for sql, params in swap:
                session.execute(text(sql), params)
    assert (await _verify(compliance))["ok"]


async def test_a_tampered_copy_of_the_witness_is_reported(
    compliance: httpx.AsyncClient,
    referrals: list[dict[str, Any]],
    checkpointer: Checkpointer,
    settings: Settings,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """The kept JSON-lines copy: a record altered (its signature fails) or removed (the next
    one's link fails) is reported."""
    await _signed_checkpoint(checkpointer)
    fill = [f"k{i}" for i in range(2)]
    for key in fill:  # two more witnessed records, so one can go from the middle
        with transaction(sessions) as session:
            store.append(session, "review", f"test:{uuid.uuid4().hex}:{key}", {"k": key})
        await _signed_checkpoint(checkpointer)
    removed, altered, seq = _tampered_copies(Path(settings.audit_witness_file), tmp_path)
    code, out = await _cli(settings, removed)
    assert code == 1
    assert any("broken_link" in line for line in out), out
    code, out = await _cli(settings, altered)
    assert code == 1
    assert any(line.startswith(f"BAD CHECKPOINT seq {seq}: bad_signature") for line in out)


def _tampered_copies(kept: Path, tmp: Path) -> tuple[Path, Path, int]:
    """Copies of the kept witness: one with a record removed, one with its head rewritten."""
    lines = kept.read_text().splitlines()
    assert len(lines) >= 3
    removed = tmp / "removed.jsonl"
    removed.write_text("\n".join(lines[:-2] + lines[-1:]) + "\n")
    doc = json.loads(lines[-1])
    doc["head"] = "f" * 64
    altered = tmp / "altered.jsonl"
    altered.write_text("\n".join([*lines[:-1], json.dumps(doc)]) + "\n")
    return removed, altered, int(doc["seq"])
