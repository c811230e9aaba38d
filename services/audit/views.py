"""The compliance API over the audit chain: search, streamed export, reports, the review of
legal-basis releases, and verification. Role ``compliance`` only (401 without a key, 403 for
any other role). Every answer carries names, ids, rules and times, never field values.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Select, and_, exists, literal, or_, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from services.audit import chain, reports
from services.audit import record as audit_record
from services.audit.models import AuditEntry
from services.auth.deps import require
from services.auth.principals import Principal, Role
from services.deps import Now, SessionDep, Sessions
from services.openapi import DateTimeParam

router = APIRouter(prefix="/v1/audit", tags=["audit"])

Compliance = Annotated[Principal, Depends(require(Role.COMPLIANCE))]
MAX_SEQ = 2**63 - 1  # audit seqs are BIGINT: a larger number is a 422, not a database error
NAME = r"^[A-Za-z0-9_.:@/-]{1,256}$"
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "Not a compliance key"},
}
CHUNK = 1000


@dataclass(frozen=True)
class Filters:
    since: datetime | None
    until: datetime | None
    agency: str | None
    partner: str | None
    partner_type: str | None
    event_type: str | None
    basis: str | None
    rule: str | None
    outcome: str | None
    survivor: str | None


def filters(
    since: Annotated[
        DateTimeParam | None, Query(alias="from", description="Decided at or after (RFC 3339)")
    ] = None,
    until: Annotated[DateTimeParam | None, Query(alias="to", description="Decided before")] = None,
    agency: Annotated[str | None, Query(pattern=NAME)] = None,
    partner: Annotated[str | None, Query(pattern=NAME)] = None,
    partner_type: Annotated[str | None, Query(pattern=NAME)] = None,
    event_type: Annotated[str | None, Query(pattern=NAME)] = None,
    basis: Annotated[
        str | None, Query(pattern=NAME, description="consent, mandated_reporting, ...")
    ] = None,
    rule: Annotated[str | None, Query(pattern=NAME, description="A rule id, e.g. R6")] = None,
    outcome: Annotated[Literal["allow", "partial", "deny"] | None, Query()] = None,
    survivor: Annotated[str | None, Query(pattern=NAME, description="Pseudonym")] = None,
) -> Filters:
    return Filters(
        since,
        until,
        agency,
        partner,
        partner_type,
        event_type,
        basis,
        rule,
        outcome,
        survivor,
    )


FiltersDep = Annotated[Filters, Depends(filters)]


def _has(column: Any, value: str) -> Any:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"%|{escaped}|%", escape="\\")


def decisions_query(f: Filters) -> Select[AuditEntry]:
    q = select(AuditEntry).where(AuditEntry.kind == "decision")
    if f.since is not None:
        q = q.where(AuditEntry.at >= f.since)
    if f.until is not None:
        q = q.where(AuditEntry.at < f.until)
    for column, value in (
        (AuditEntry.agency_id, f.agency),
        (AuditEntry.partner_id, f.partner),
        (AuditEntry.partner_type, f.partner_type),
        (AuditEntry.event_type, f.event_type),
        (AuditEntry.outcome, f.outcome),
        (AuditEntry.survivor_id, f.survivor),
    ):
        if value is not None:
            q = q.where(column == value)
    if f.basis is not None:
        q = q.where(_has(AuditEntry.basis, f.basis))
    if f.rule is not None:
        q = q.where(_has(AuditEntry.rules, f.rule))
    return q


def _chunks(
    sessions: sessionmaker[Session], query: Select[AuditEntry]
) -> Iterator[list[AuditEntry]]:
    """The query's rows in seq order, a chunk at a time, each chunk from a fresh read."""
    after = 0
    while True:
        with sessions() as session:
            rows = list(
                session.scalars(
                    query.where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(CHUNK)
                )
            )
        if rows:
            yield rows
        if len(rows) < CHUNK:
            return
        after = rows[-1].seq


# --- search and export ---------------------------------------------------------------------


class DecisionOut(BaseModel):
    seq: int
    entry_hash: str
    record: dict[str, Any]


class DecisionPage(BaseModel):
    items: list[DecisionOut]
    next_after: int | None


def _out(row: AuditEntry) -> DecisionOut:
    return DecisionOut(seq=row.seq, entry_hash=row.entry_hash, record=json.loads(row.record))


@router.get(
    "/decisions",
    response_model=DecisionPage,
    summary="Search decision records",
    description="Decision records in chain order, filtered; page with `after` = the previous "
    "page's `next_after`. Each record names released and withheld fields (never values), the "
    "rules for each withheld field, the basis, consents and versions, and the policy revision.",
    responses=RESPONSES,
)
def search(
    _: Compliance,
    session: SessionDep,
    f: FiltersDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Entries after this seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DecisionPage:
    query = decisions_query(f).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(limit)
    rows = list(session.scalars(query))
    return DecisionPage(
        items=[_out(r) for r in rows], next_after=rows[-1].seq if len(rows) == limit else None
    )


CSV_COLUMNS = [
    "seq",
    "decided_at",
    "event_id",
    "event_type",
    "agency_id",
    "partner_id",
    "partner_type",
    "purpose",
    "survivor_id",
    "outcome",
    "released",
    "withheld",
    "basis",
    "reasons",
    "consents",
    "review_required",
    "policy_revision",
    "entry_hash",
]


def csv_row(seq: int, entry_hash: str, r: dict[str, Any]) -> list[Any]:
    withheld = ";".join(
        f"{w.get('field')}:{'+'.join(w.get('rules') or [])}" for w in r.get("withheld") or []
    )
    consents = ";".join(f"{c.get('id')}@{c.get('version')}" for c in r.get("consents") or [])
    return [
        seq,
        r.get("decided_at"),
        r.get("event_id"),
        r.get("event_type"),
        r.get("agency_id"),
        r.get("partner_id"),
        r.get("partner_type"),
        r.get("purpose"),
        r.get("survivor_id"),
        r.get("outcome"),
        ";".join(r.get("released") or []),
        withheld,
        ";".join(r.get("basis") or []),
        ";".join(r.get("reasons") or []),
        consents,
        r.get("review_required"),
        r.get("policy_revision"),
        entry_hash,
    ]


def export_lines(
    sessions: sessionmaker[Session], f: Filters, fmt: Literal["csv", "jsonl"]
) -> Iterator[bytes]:
    """The export, produced a chunk of rows at a time: memory stays flat for any range."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(CSV_COLUMNS)
    for rows in _chunks(sessions, decisions_query(f)):
        for row in rows:
            if fmt == "csv":
                writer.writerow(csv_row(row.seq, row.entry_hash, json.loads(row.record)))
            else:
                buf.write(
                    f'{{"seq":{row.seq},"entry_hash":"{row.entry_hash}","record":{row.record}}}\n'
                )
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


@router.get(
    "/decisions/export",
    summary="Export decision records (CSV or JSON Lines), streamed",
    description="The same filters as the search, every matching record in chain order, "
    "streamed in chunks from the database (large ranges never load into memory).",
    responses={
        **RESPONSES,
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}},
    },
    response_class=StreamingResponse,
)
def export(
    sessions: Sessions,
    _: Compliance,
    request: Request,
    f: FiltersDep,
    format: Annotated[Literal["csv", "jsonl"], Query()] = "jsonl",
) -> StreamingResponse:
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    name = f"accord-decisions.{format}"
    return StreamingResponse(
        export_lines(sessions, f, format),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- reports ---------------------------------------------------------------------------------


def _threshold(request: Request) -> int:
    return reports.threshold(request.app.state.settings.policies_dir)


@router.get(
    "/reports/rules",
    response_model=reports.RulesReport,
    summary="Releases and refusals by rule and partner type (small counts suppressed, R15)",
    responses=RESPONSES,
)
def rules_report(
    sessions: Sessions, _: Compliance, request: Request, f: FiltersDep
) -> reports.RulesReport:
    """Counts of released and withheld fields by rule and partner type, over the decisions
    the filters select; a count below the threshold is shown as suppressed (R15)."""
    records = (
        json.loads(row.record) for rows in _chunks(sessions, decisions_query(f)) for row in rows
    )
    return reports.rules_report(records, _threshold(request))


@router.get(
    "/reports/consents",
    response_model=reports.ConsentReport,
    summary="Consent grants, amendments and revocations over time (small counts suppressed)",
    responses=RESPONSES,
)
def consents_report(
    sessions: Sessions,
    _: Compliance,
    request: Request,
    since: Annotated[DateTimeParam | None, Query(alias="from")] = None,
    until: Annotated[DateTimeParam | None, Query(alias="to")] = None,
    period: Annotated[reports.Period, Query()] = "day",
) -> reports.ConsentReport:
    """Consent grants, amendments and revocations per period; counts below the threshold
    are suppressed (R15)."""
    query = select(AuditEntry).where(AuditEntry.kind == "consent_change")
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    changes = (
        (row.at, str(json.loads(row.record).get("op")))
        for rows in _chunks(sessions, query)
        for row in rows
        if row.at is not None
    )
    return reports.consent_report(changes, period, _threshold(request))


# --- review of legal-basis releases ----------------------------------------------------------


# A decision the policy flagged because the survivor's age is unknown and this partner would
# have received a minor's mandated report (R5): reviewed whatever its outcome. Records are
# stored as canonical JSON, so the flag list reads exactly so.
AGE_UNKNOWN = '"flags":["age_unknown"]'


def _age_unknown(record: dict[str, Any]) -> bool:
    return "age_unknown" in (record.get("flags") or [])


def pending_reviews_query() -> Select[AuditEntry]:
    review = aliased(AuditEntry)
    legal = or_(*(_has(AuditEntry.basis, b) for b in chain.LEGAL_BASES))
    released = and_(AuditEntry.outcome != "deny", legal)
    flagged = AuditEntry.record.contains(AGE_UNKNOWN, autoescape=True)
    reviewed = exists().where(review.entry_key == literal("review:").concat(AuditEntry.entry_key))
    return select(AuditEntry).where(
        and_(AuditEntry.kind == "decision", or_(released, flagged), ~reviewed)
    )


@router.get(
    "/reviews",
    response_model=DecisionPage,
    summary="Legal-basis releases awaiting review",
    description="Releases made under mandated_reporting (R5), imminent_danger (R8) or "
    "court_order (R9), and decisions flagged age_unknown (the survivor's age is unknown and "
    "the partner would have received a minor's mandated report, R5), that compliance has not "
    "yet marked reviewed, in chain order. These are individual records for review, not "
    "aggregate counts.",
    responses=RESPONSES,
)
def pending_reviews(
    _: Compliance,
    session: SessionDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DecisionPage:
    query = pending_reviews_query().where(AuditEntry.seq > after).order_by(AuditEntry.seq)
    rows = list(session.scalars(query.limit(limit)))
    return DecisionPage(
        items=[_out(r) for r in rows], next_after=rows[-1].seq if len(rows) == limit else None
    )


class ReviewOut(BaseModel):
    decision_seq: int
    review_seq: int


@router.post(
    "/reviews/{seq}",
    response_model=ReviewOut,
    status_code=201,
    summary="Mark a legal-basis release reviewed (itself an audit entry)",
    responses={
        **RESPONSES,
        404: {"description": "No legal-basis release at this seq"},
        409: {"description": "Already reviewed"},
    },
)
def mark_reviewed(
    sessions: Sessions,
    now: Now,
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)],
    principal: Compliance,
    request: Request,
) -> ReviewOut:
    """Record that the calling compliance officer reviewed the release at `seq`; the review
    is an audit entry of its own, and removes the release from the pending list."""
    with sessions() as session, session.begin():
        row = session.get(AuditEntry, seq)
        record = json.loads(row.record) if row is not None else {}
        legal = set(record.get("basis") or []) & set(chain.LEGAL_BASES)
        release = bool(legal) and bool(record.get("released"))
        if row is None or row.kind != "decision" or not (release or _age_unknown(record)):
            raise HTTPException(404, detail="No legal-basis release at this seq.")
        done = audit_record.review(session, record, row.entry_key, principal.subject, now)
        if not done:
            raise HTTPException(409, detail="This release has already been reviewed.")
        review_seq = session.scalar(
            select(AuditEntry.seq).where(AuditEntry.entry_key == f"review:{row.entry_key}")
        )
    assert review_seq is not None
    return ReviewOut(decision_seq=seq, review_seq=review_seq)


# --- verification ----------------------------------------------------------------------------


class VerifyOut(chain.VerifyReport):
    key_id: str
    verify_key: str  # hex, Ed25519: what a third party checks the checkpoints with


@router.get(
    "/verify",
    response_model=VerifyOut,
    summary="Recompute the chain against its witnessed checkpoints",
    description="Checks the database's chain against the checkpoints witnessed outside it "
    "(the checkpointer's topic) and reports each broken range, first one first (altered, "
    "forged, deleted or reordered), and every witnessed record whose signature or link "
    "does not hold.",
    responses=RESPONSES,
)
async def verify(sessions: Sessions, _: Compliance, request: Request) -> VerifyOut:
    verification = request.app.state.audit_verification
    report = await verification.report(sessions)
    key = verification.checkpoint_key
    return VerifyOut(**report.model_dump(), key_id=chain.key_id(key), verify_key=bytes(key).hex())
