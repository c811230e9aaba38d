"""The compliance dashboard: server-rendered pages over the audit chain, at ``/dashboard``.

Filters, the decisions with the rules behind each withheld field, the legal-basis releases
awaiting review (with a button to mark one reviewed), releases and refusals over time as an
inline SVG chart with its numbers as a table (small counts suppressed, R15), and the chain's
verification status. Everything is read through ``services/audit`` (its queries, its review
and its verify); a page shows field names, rule ids, pseudonyms and times, never a field's
value. No script, nothing loaded from elsewhere: the Content-Security-Policy says so.

Sign-in: ``/dashboard/login`` takes a compliance API key once and sets a signed session cookie
that names the credential (``services/dashboard/session.py``); the credential is checked again
on every request. Every POST form carries the session's CSRF token.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.audit import chain, reports
from services.audit import views as audit
from services.audit.models import AuditEntry
from services.auth.models import Credential
from services.auth.principals import Principal, Role
from services.auth.service import authenticate
from services.dashboard import session as browser
from services.deps import Now, SessionDep, Sessions
from services.referrals import oversight_views as referral_oversight
from services.referrals.models import Referral, ReferralBreach
from services.referrals.states import OPEN

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
QUEUE_SIZE = 50
VERIFY_TTL_S = 60.0
CHART_DEFAULT_DAYS = 30
FILTER_NAMES = (
    "agency",
    "partner",
    "partner_type",
    "event_type",
    "basis",
    "rule",
    "outcome",
    "survivor",
)
OUTCOMES = ("allow", "partial", "deny")
REVIEW_MESSAGES = {
    "done": "was marked reviewed (a review entry is now in the chain).",
    "already": "had already been reviewed.",
    "not_found": "is not a legal-basis release.",
}
NAME = re.compile(audit.NAME)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class SecureRoute(APIRoute):
    """Every dashboard response carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            response = await handler(request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return secured


router = APIRouter(prefix="/dashboard", route_class=SecureRoute, include_in_schema=False)


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status)


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        max_age=browser.MAX_AGE_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def form_data(request: Request) -> dict[str, str]:
    """An urlencoded form body (the dashboard's forms send nothing else)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=20)
    return {k: v[0] for k, v in parsed.items() if v}


FormDep = Annotated[dict[str, str], Depends(form_data)]


# --- who is signed in --------------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    principal: Principal
    csrf: str


def _to_login(request: Request) -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    if request.cookies.get(browser.COOKIE):
        _clear_cookie(request, response, browser.COOKIE)
    return response


def _forbidden(request: Request) -> Response:
    response = _page(
        "error.html",
        403,
        title="Not a compliance key",
        message="The dashboard is for compliance staff: this key has another role.",
    )
    _clear_cookie(request, response, browser.COOKIE)
    return response


def signed_in(request: Request, db: Session) -> Signed | Response:
    """The compliance principal behind the session cookie, checked against the credentials
    table now (a revoked key is signed out at once); otherwise the response to send."""
    state = browser.read(request.cookies.get(browser.COOKIE))
    if state is None:
        return _to_login(request)
    cred = db.get(Credential, state.credential_id)
    if cred is None or cred.revoked_at is not None:
        return _to_login(request)
    if cred.role != Role.COMPLIANCE.value:
        return _forbidden(request)
    principal = Principal(
        role=Role(cred.role), subject=cred.subject, credential_id=cred.id, agency_id=cred.agency_id
    )
    return Signed(principal, state.csrf)


def _csrf_failed() -> Response:
    return _page(
        "error.html",
        403,
        title="Form expired",
        message="This form was not sent from the dashboard page (missing or wrong CSRF token). "
        "Go back, reload the page and try again.",
    )


# --- static ----------------------------------------------------------------------------------


@router.get("/static/dashboard.css")
def stylesheet() -> Response:
    return Response(
        (HERE / "static" / "dashboard.css").read_bytes(),
        media_type="text/css",
        headers={"Cache-Control": "no-cache"},
    )


# --- login and logout ------------------------------------------------------------------------


def _login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = browser.login_token()
    response = _page("login.html", status, csrf=token, error=error)
    _set_cookie(request, response, browser.LOGIN_CSRF_COOKIE, token)
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
def login(request: Request, db: SessionDep, form: FormDep) -> Response:
    if not browser.same(form.get("csrf"), request.cookies.get(browser.LOGIN_CSRF_COOKIE)):
        return _login_page(request, 403, "The sign-in form expired. Please try again.")
    principal = authenticate(session=db, token=form.get("key", "").strip())
    if principal is None:
        return _login_page(request, 401, "That API key is not valid (or has been revoked).")
    if principal.role is not Role.COMPLIANCE:
        return _forbidden(request)
    _, cookie = browser.issue(principal.credential_id)
    response = RedirectResponse("/dashboard", status_code=303)
    _set_cookie(request, response, browser.COOKIE, cookie)
    _clear_cookie(request, response, browser.LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, db: SessionDep, form: FormDep) -> Response:
    who = signed_in(request, db)
    if isinstance(who, Signed) and not browser.same(form.get("csrf"), who.csrf):
        return _csrf_failed()
    response = RedirectResponse("/dashboard/login", status_code=303)
    _clear_cookie(request, response, browser.COOKIE)
    return response


# --- filters ---------------------------------------------------------------------------------


def _when(text: str) -> datetime:
    """An ISO date or date-time (a browser's datetime-local has no zone: read as UTC)."""
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def parse_filters(query: Mapping[str, str]) -> tuple[audit.Filters, dict[str, str], list[str]]:
    """The query string as the audit API's filters, the values to show back in the form, and
    what was wrong (a wrong filter is dropped and said, never guessed)."""
    values: dict[str, str] = {}
    errors: list[str] = []
    for name in ("from", "to", *FILTER_NAMES):
        value = (query.get(name) or "").strip()
        if value:
            values[name] = value
    times: dict[str, datetime | None] = {"from": None, "to": None}
    for name in times:
        if name in values:
            try:
                times[name] = _when(values[name])
            except ValueError:
                errors.append(f"“{name}” is not a date and time (YYYY-MM-DDTHH:MM).")
                values.pop(name)
    names: dict[str, str | None] = {}
    for name in FILTER_NAMES:
        given = values.get(name)
        if given is not None and (
            given not in OUTCOMES if name == "outcome" else not NAME.match(given)
        ):
            errors.append(f"“{name.replace('_', ' ')}” has characters a name cannot have.")
            values.pop(name)
            given = None
        names[name] = given
    f = audit.Filters(
        times["from"],
        times["to"],
        names["agency"],
        names["partner"],
        names["partner_type"],
        names["event_type"],
        names["basis"],
        names["rule"],
        names["outcome"],
        names["survivor"],
    )
    return f, values, errors


# --- what a page shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Withheld:
    field: str
    rules: list[str]


@dataclass(frozen=True)
class DecisionView:
    """What the dashboard shows of a decision record: names, ids, rules and times only."""

    seq: int
    decided_at: str
    event_id: str
    event_type: str
    agency: str
    partner: str
    partner_type: str
    purpose: str
    survivor: str
    outcome: str
    released: list[str]
    withheld: list[Withheld]
    basis: list[str]
    reasons: list[str]
    consents: list[str]
    policy_revision: str


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def decision_view(row: AuditEntry) -> DecisionView:
    r: dict[str, Any] = json.loads(row.record)
    return DecisionView(
        seq=row.seq,
        decided_at=_s(r.get("decided_at")),
        event_id=_s(r.get("event_id")),
        event_type=_s(r.get("event_type")),
        agency=_s(r.get("agency_id")),
        partner=_s(r.get("partner_id")),
        partner_type=_s(r.get("partner_type")),
        purpose=_s(r.get("purpose")),
        survivor=_s(r.get("survivor_id")),
        outcome=_s(r.get("outcome")),
        released=[str(f) for f in r.get("released") or []],
        withheld=[
            Withheld(_s(w.get("field")), [str(x) for x in w.get("rules") or []])
            for w in r.get("withheld") or []
        ],
        basis=[str(b) for b in r.get("basis") or []],
        reasons=[str(x) for x in r.get("reasons") or []],
        consents=[f"{c.get('id')} v{c.get('version')}" for c in r.get("consents") or []],
        policy_revision=_s(r.get("policy_revision")),
    )


@dataclass(frozen=True)
class Bar:
    period: str
    released: int | None  # None: suppressed (fewer than the threshold)
    refused: int | None


@dataclass(frozen=True)
class Chart:
    since: datetime
    until: datetime
    period: reports.Period
    threshold: int
    bars: list[Bar]
    svg: dict[str, Any]


def _chart_range(f: audit.Filters, now: datetime) -> tuple[datetime, datetime]:
    until = f.until or now
    since = f.since or (until - timedelta(days=CHART_DEFAULT_DAYS))
    return since, max(until, since)


def chart(db: Session, f: audit.Filters, threshold: int, now: datetime) -> Chart:
    """Decisions that released something and decisions that released nothing, per period of
    the filtered range (the last 30 days without a range), each count suppressed below the
    R15 threshold. Reads two columns of the audit API's own query, not the records."""
    since, until = _chart_range(f, now)
    span = until - since
    period: reports.Period = (
        "day" if span <= timedelta(days=62) else "week" if span <= timedelta(days=730) else "month"
    )
    keys: list[str] = []
    day = since
    while day < until or not keys:
        key = reports.period_of(day, period)
        if not keys or keys[-1] != key:
            keys.append(key)
        day += timedelta(days=1)
    last = reports.period_of(until - timedelta(microseconds=1), period)
    if keys[-1] != last and last > keys[-1]:
        keys.append(last)
    released: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    query = replace(f, since=since, until=until)
    columns = audit.decisions_query(query).with_only_columns(AuditEntry.at, AuditEntry.outcome)
    for at, outcome in db.execute(columns.execution_options(yield_per=5000)):
        if at is None:
            continue
        key = reports.period_of(at.astimezone(UTC), period)
        (refused if outcome == "deny" else released)[key] += 1
    bars = [
        Bar(k, reports.shown(released[k], threshold), reports.shown(refused[k], threshold))
        for k in keys
    ]
    return Chart(since, until, period, threshold, bars, _svg(bars, threshold))


def _svg(bars: list[Bar], threshold: int) -> dict[str, Any]:
    """Coordinates for the template's inline SVG: grouped bars, a y axis with three ticks, and
    at most about twelve x labels."""
    width, height = 760, 260
    left, right, top, bottom = 48, 12, 12, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = max([threshold] + [n for b in bars for n in (b.released, b.refused) if n])
    band = plot_w / max(len(bars), 1)
    bar_w = max(min(band * 0.38, 28), 2)
    every = max(1, -(-len(bars) // 12))

    def y(n: float) -> float:
        return top + plot_h - plot_h * n / top_value

    rects = []
    for i, b in enumerate(bars):
        x0 = left + i * band + band / 2 - bar_w
        for j, (series, n) in enumerate((("released", b.released), ("refused", b.refused))):
            x = round(x0 + j * bar_w, 1)
            if n is None:
                rects.append(
                    {"series": "suppressed", "x": x, "y": y(0) - 3, "w": bar_w, "h": 3, "n": None}
                )
            elif n > 0:
                h = plot_h * n / top_value
                rects.append(
                    {"series": series, "x": x, "y": round(y(n), 1), "w": bar_w, "h": h, "n": n}
                )
    ticks = [{"value": v, "y": round(y(v), 1)} for v in (0, top_value // 2, top_value)]
    labels = [
        {"x": round(left + i * band + band / 2, 1), "text": b.period[5:] or b.period}
        for i, b in enumerate(bars)
        if i % every == 0
    ]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "base": y(0),
        "top": top,
        "rects": rects,
        "ticks": ticks,
        "labels": labels,
        "label_y": height - bottom + 18,
    }


@dataclass(frozen=True)
class VerifyStatus:
    report: chain.VerifyReport
    at: datetime
    refreshing: bool = False


_verifying = threading.Lock()  # one background verify per API process at a time
_storing = threading.Lock()


def _verify(app: Any) -> VerifyStatus:
    sessions: sessionmaker[Session] = app.state.sessions
    started = datetime.now(UTC)
    status = VerifyStatus(app.state.audit_verification.report_blocking(sessions), started)
    with _storing:
        current: VerifyStatus | None = getattr(app.state, "dashboard_verify", None)
        if current is None or current.at <= started:  # a slower, older run never wins
            app.state.dashboard_verify = status
    return status


def _verify_in_background(app: Any) -> bool:
    if not _verifying.acquire(blocking=False):
        return True  # already running

    def run() -> None:
        try:
            _verify(app)
        finally:
            _verifying.release()

    threading.Thread(target=run, name="dashboard-verify", daemon=True).start()
    return True


def verify_status(request: Request, force: bool = False) -> VerifyStatus:
    """The chain's verify report. A full verify reads every entry (seconds for a large chain),
    so a page shows the last report and, when it is over a minute old, starts a new one in the
    background; the first page, and "Verify now", wait for a fresh one."""
    app = request.app
    cached: VerifyStatus | None = getattr(app.state, "dashboard_verify", None)
    if force or cached is None:
        return _verify(app)
    if (datetime.now(UTC) - cached.at).total_seconds() < VERIFY_TTL_S:
        return cached
    return replace(cached, refreshing=_verify_in_background(app))


# --- the page --------------------------------------------------------------------------------


@router.get("")
def dashboard(request: Request, db: SessionDep, now: Now) -> Response:
    who = signed_in(request, db)
    if not isinstance(who, Signed):
        return who
    query = dict(request.query_params)
    f, values, errors = parse_filters(query)
    before: int | None = None
    if (query.get("before") or "").isdigit():
        before = int(query["before"])
    q = audit.decisions_query(f)
    if before is not None:
        q = q.where(AuditEntry.seq < before)
    filtered = bool(values)
    size = PAGE_SIZE
    if (query.get("size") or "").isdigit():  # rows per page, kept across pages
        size = min(max(int(query["size"]), 10), 500)
        values["size"] = str(size)
    rows = list(db.scalars(q.order_by(AuditEntry.seq.desc()).limit(size + 1)))
    decisions = [decision_view(r) for r in rows[:size]]
    older = urlencode({**values, "before": decisions[-1].seq}) if len(rows) > size else None
    # The queue is narrowed by the same filters (their conditions, from the audit API's query).
    narrowed = audit.decisions_query(f).whereclause
    pending = audit.pending_reviews_query()
    if narrowed is not None:
        pending = pending.where(narrowed)
    queue_rows = list(db.scalars(pending.order_by(AuditEntry.seq).limit(QUEUE_SIZE + 1)))
    threshold = reports.threshold(request.app.state.settings.policies_dir)
    return _page(
        "dashboard.html",
        csrf=who.csrf,
        subject=who.principal.subject,
        values=values,
        errors=errors,
        outcomes=OUTCOMES,
        legal_bases=chain.LEGAL_BASES,
        filtered=filtered,
        before=before,
        decisions=decisions,
        older=older,
        newest=urlencode(values),
        here=urlencode({k: v for k, v in values.items() if k != "size"}),
        queue=[decision_view(r) for r in queue_rows[:QUEUE_SIZE]],
        queue_more=len(queue_rows) > QUEUE_SIZE,
        review=REVIEW_MESSAGES.get(query.get("review", "")),
        review_seq=query.get("seq", "") if query.get("seq", "").isdigit() else "",
        chart=chart(db, f, threshold, now),
        verify=verify_status(request),
    )


@router.post("/reviews/{seq}")
def mark_reviewed(
    seq: int, request: Request, db: SessionDep, sessions: Sessions, now: Now, form: FormDep
) -> Response:
    who = signed_in(request, db)
    if not isinstance(who, Signed):
        return who
    if not browser.same(form.get("csrf"), who.csrf):
        return _csrf_failed()
    db.close()  # the audit API's review opens its own transaction
    try:
        audit.mark_reviewed(sessions, now, seq, who.principal, request)
    except HTTPException as e:
        result = "already" if e.status_code == 409 else "not_found"
    else:
        result = "done"
    _, values, _ = parse_filters(dict(request.query_params))  # back to the same filters
    back = urlencode({**values, "review": result, "seq": seq})
    return RedirectResponse(f"/dashboard?{back}#review-queue", status_code=303)


@router.post("/verify")
def verify_now(request: Request, db: SessionDep, form: FormDep) -> Response:
    who = signed_in(request, db)
    if not isinstance(who, Signed):
        return who
    if not browser.same(form.get("csrf"), who.csrf):
        return _csrf_failed()
    verify_status(request, force=True)
    return RedirectResponse("/dashboard#verification", status_code=303)


# --- referrals --------------------------------------------------------------------------------

REFERRALS_SIZE = 200


@router.get("/referrals")
def referrals_page(request: Request, db: SessionDep) -> Response:
    """Open and overdue referrals, newest first, and the referral figures (R15-suppressed)."""
    who = signed_in(request, db)
    if not isinstance(who, Signed):
        return who
    overdue_only = request.query_params.get("overdue") == "1"
    q = select(Referral).where(Referral.state.in_(sorted(s.value for s in OPEN)))
    if overdue_only:
        q = q.where(Referral.overdue.is_(True))
    rows = list(db.scalars(q.order_by(Referral.made_at.desc()).limit(REFERRALS_SIZE + 1)))
    due = {
        (b.referral_id, b.kind): b
        for b in db.scalars(
            select(ReferralBreach).where(ReferralBreach.referral_id.in_([r.id for r in rows]))
        )
    }
    return _page(
        "referrals.html",
        csrf=who.csrf,
        subject=who.principal.subject,
        referrals=rows[:REFERRALS_SIZE],
        more=len(rows) > REFERRALS_SIZE,
        breaches=due,
        overdue_only=overdue_only,
        report=referral_oversight.report_of(db, request.app.state.settings.policies_dir),
    )
