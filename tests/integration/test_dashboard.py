"""The compliance dashboard on the real stack: sign-in with a compliance key (and only one), a
revoked key signed out at once, CSRF on every form, the security headers, filters that narrow
the table, the review queue, the chart with small counts suppressed, the chain's status, and
never a field value; then the same in headless Chromium, driven by the keyboard.

Run alone with its own database:
``ACCORD_TEST_DATABASE=accord_test_dash .venv/bin/pytest tests/integration/test_dashboard.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from services.audit import chain
from services.audit.models import AuditEntry
from services.auth.principals import Role
from services.auth.service import issue_credential, revoke_credential
from services.dashboard import session as browser_session
from services.db import transaction
from services.decision_records import split_decisions
from services.kafka.client import AUDIT, kafka
from services.sdk.partner import collect, tail
from services.settings import REPO_ROOT, Settings
from tests.support.events import PARTNERS, REFERRAL, cloudevent, inbound_record, publish_and_collect
from tests.support.registry import RULE_PARTNERS

pytestmark = pytest.mark.integration

SCREENING = {
    "survivor_name": "Ottoline Brackenbury",
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
# What the events contained: none of it may ever appear on a dashboard page.
VALUES = (
    "Zephyrine",
    "Quillfeather",
    "+1-555-0100",
    "needs safe housing",
    "Ottoline",
    "Brackenbury",
)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ARTIFACTS = REPO_ROOT / ".accord" / "test-artifacts"


@pytest.fixture(scope="module")
def keys(sessions: sessionmaker[Session]) -> dict[str, str]:
    with transaction(sessions) as session:
        made = {
            "compliance": issue_credential(session=session, role=Role.COMPLIANCE, subject="cmp-d"),
            "advocate": issue_credential(
                session=session, role=Role.ADVOCATE, subject="adv-d", agency_id="harbor-outreach"
            ),
            "partner": issue_credential(
                session=session, role=Role.PARTNER, subject="lighthouse-shelter"
            ),
            "admin": issue_credential(session=session, role=Role.ADMIN, subject="root-d"),
        }
    return made


async def chained(sessions: sessionmaker[Session], keys: set[str]) -> dict[str, AuditEntry]:
    """Wait until the audit sink has chained every key; return those rows."""
    deadline = time.monotonic() + 30
    while True:
        with sessions() as session:
            rows = list(session.scalars(select(AuditEntry).where(AuditEntry.entry_key.in_(keys))))
        if len(rows) == len(keys) or time.monotonic() > deadline:
            return {r.entry_key: r for r in rows}
        await asyncio.sleep(0.2)


async def screening(
    settings: Settings, producer: AIOKafkaProducer, sessions: sessionmaker[Session]
) -> AuditEntry:
    """A screening of a minor: child welfare gets a mandated report (R5), a legal-basis release
    that waits for review; returns its chained decision."""
    event = cloudevent(
        "harbor-outreach",
        f"sv-dash-{uuid.uuid4().hex[:8]}",
        SCREENING,
        type="accord.screening.completed",
    )
    out = await publish_and_collect(settings, producer, event, [p["id"] for p in RULE_PARTNERS])
    assert out.decisions["rules-cps-a"]["basis"] == ["mandated_reporting"]
    key = chain.decision_key(event["id"], "rules-cps-a")
    return (await chained(sessions, {key}))[key]


@pytest.fixture(scope="module")
async def data(
    settings: Settings,
    producer: AIOKafkaProducer,
    api: str,
    sessions: sessionmaker[Session],
) -> dict[str, Any]:
    """Twelve referrals to three partners (no consent: law enforcement refused twelve times,
    above the R15 threshold of 11) and one screening with a release awaiting review."""
    events = [cloudevent("harbor-outreach", f"sv-dash-{i}", REFERRAL) for i in range(12)]
    ids = {e["id"] for e in events}
    async with tail(kafka(settings, AUDIT), settings.topic_decisions) as decided:
        for e in events:
            await producer.send(
                settings.topic_inbound, inbound_record(settings, e), key=e["subject"].encode()
            )
        await producer.flush()
        got = await collect(
            decided,
            until=len(events) * len(PARTNERS),
            timeout_s=60,
            settle_s=1,
            split=split_decisions,
        )
    records = [r for r in got if r["event_id"] in ids]
    assert len(records) == 12 * len(PARTNERS)
    keys = {chain.decision_key(r["event_id"], r["partner_id"]) for r in records}
    assert len(await chained(sessions, keys)) == len(keys)
    review = await screening(settings, producer, sessions)
    return {"records": records, "review": review}


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@asynccontextmanager
async def login(api: str, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in through the login form (cookies kept)."""
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        form = await client.get("/dashboard/login")
        resp = await client.post("/dashboard/login", data={"csrf": csrf_of(form.text), "key": key})
        assert resp.status_code == 303, resp.text
        assert resp.headers["location"] == "/dashboard"
        yield client


@pytest.fixture
async def signed(api: str, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with login(api, keys["compliance"]) as client:
        yield client


def assert_no_values(html: str) -> None:
    for value in VALUES:
        assert value not in html, value


def rows_of(html: str, table: str) -> list[dict[str, str]]:
    """The data attributes of each row of one table on the page."""
    start = html.index(f'id="{table}"')
    body = html[start : html.index("</table>", start)]
    return [
        dict(re.findall(r'data-([a-z]+)="([^"]*)"', tr))
        for tr in re.findall(r"<tr data-[^>]*>", body)
    ]


def queue_of(html: str) -> set[str]:
    """The seqs in the review queue on the page (none when it says nothing awaits)."""
    if 'id="review-table"' not in html:
        assert 'id="queue-empty"' in html
        return set()
    return {r["seq"] for r in rows_of(html, "review-table")}


# --- sign-in ---------------------------------------------------------------------------------


async def test_login_shows_the_dashboard_and_logout_ends_the_session(
    api: str, keys: dict[str, str], data: dict[str, Any]
) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        assert (await client.get("/dashboard")).headers["location"] == "/dashboard/login"
        form = await client.get("/dashboard/login")
        assert form.status_code == 200 and 'for="key"' in form.text
        resp = await client.post(
            "/dashboard/login", data={"csrf": csrf_of(form.text), "key": keys["compliance"]}
        )
        assert resp.status_code == 303
        cookie = next(
            c
            for c in resp.headers.get_list("set-cookie")
            if c.startswith(browser_session.COOKIE + "=")
        )
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/dashboard"} <= flags
        assert "secure" not in flags  # plain http here; set whenever the request is https
        assert keys["compliance"].split("_")[2] not in cookie  # the secret never is in it

        page = await client.get("/dashboard")
        assert page.status_code == 200
        html = page.text
        for part in ("decisions-table", "review-table", 'id="chart"', "verify-status"):
            assert part in html, part
        assert "Signed in as <strong>cmp-d</strong>" in html
        assert_no_values(html)

        out = await client.post("/dashboard/logout", data={"csrf": csrf_of(html)})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
        after = await client.get("/dashboard")
        assert after.status_code == 303 and after.headers["location"] == "/dashboard/login"


async def test_a_wrong_key_is_refused_and_other_roles_get_403(
    api: str, keys: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        form = await client.get("/dashboard/login")
        token = csrf_of(form.text)
        bad = await client.post("/dashboard/login", data={"csrf": token, "key": "acc_x_y"})
        assert bad.status_code == 401 and "not valid" in bad.text
        assert browser_session.COOKIE not in client.cookies
        for role in ("advocate", "partner", "admin"):
            form = await client.get("/dashboard/login")
            resp = await client.post(
                "/dashboard/login", data={"csrf": csrf_of(form.text), "key": keys[role]}
            )
            assert resp.status_code == 403, role
            assert "compliance" in resp.text
            assert browser_session.COOKIE not in client.cookies
        # A forged cookie (a real credential id, a made-up signature) is not a session.
        client.cookies.set(browser_session.COOKIE, "eyJjIjoiYSJ9.bad", path="/dashboard")
        assert (await client.get("/dashboard")).status_code == 303


async def test_a_cookie_of_another_role_is_refused_with_403(api: str, keys: dict[str, str]) -> None:
    """Even a validly signed session for a non-compliance credential gets no page."""
    advocate_id = keys["advocate"].split("_")[1]
    _, cookie = browser_session.issue(advocate_id)
    # The API runs in this process, so it signs with this process's secret.
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        client.cookies.set(browser_session.COOKIE, cookie, path="/dashboard")
        resp = await client.get("/dashboard")
        assert resp.status_code == 403


async def test_a_revoked_key_is_signed_out_at_once(
    api: str, sessions: sessionmaker[Session], data: dict[str, Any]
) -> None:
    with transaction(sessions) as session:
        key = issue_credential(session=session, role=Role.COMPLIANCE, subject="cmp-revoked")
    async with login(api, key) as client:
        assert (await client.get("/dashboard")).status_code == 200
        with transaction(sessions) as session:
            assert revoke_credential(session=session, credential_id=key.split("_")[1])
        resp = await client.get("/dashboard")
        assert resp.status_code == 303 and resp.headers["location"] == "/dashboard/login"
        seq = data["review"].seq
        post = await client.post(f"/dashboard/reviews/{seq}", data={"csrf": "anything"})
        assert post.status_code == 303 and post.headers["location"] == "/dashboard/login"


async def test_forms_without_the_csrf_token_are_refused(
    api: str, keys: dict[str, str], signed: httpx.AsyncClient, data: dict[str, Any]
) -> None:
    seq = data["review"].seq
    for body in ({}, {"csrf": "not-the-token"}):
        resp = await signed.post(f"/dashboard/reviews/{seq}", data=body)
        assert resp.status_code == 403 and "CSRF" in resp.text
        assert (await signed.post("/dashboard/logout", data=body)).status_code == 403
        assert (await signed.post("/dashboard/verify", data=body)).status_code == 403
    # A token from another session does not do either.
    async with login(api, keys["compliance"]) as other:
        theirs = csrf_of((await other.get("/dashboard")).text)
    resp = await signed.post(f"/dashboard/reviews/{seq}", data={"csrf": theirs})
    assert resp.status_code == 403
    mine = {"survivor": data["review"].survivor_id}
    page = (await signed.get("/dashboard", params=mine)).text
    assert str(seq) in {r["seq"] for r in rows_of(page, "review-table")}
    assert (await signed.get("/dashboard")).status_code == 200  # still signed in
    # Signing in needs the token the login page set in its cookie.
    async with httpx.AsyncClient(base_url=api, timeout=60) as fresh:
        resp = await fresh.post(
            "/dashboard/login", data={"csrf": "guess", "key": keys["compliance"]}
        )
        assert resp.status_code == 403 and browser_session.COOKIE not in fresh.cookies


async def test_every_dashboard_response_has_the_security_headers(
    api: str, signed: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=60) as anon:
        responses = [
            await anon.get("/dashboard/login"),
            await anon.get("/dashboard"),
            await anon.get("/dashboard/static/dashboard.css"),
            await anon.post("/dashboard/login", data={"key": "x"}),
            await signed.get("/dashboard"),
            await signed.post("/dashboard/logout", data={}),
        ]
    for resp in responses:
        h = resp.headers
        assert "default-src 'self'" in h["content-security-policy"], resp.url
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY"
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
    page = responses[4].text
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    paths = (await signed.get("/openapi.json")).json()["paths"]
    assert not any(p.startswith("/dashboard") for p in paths)  # pages, not API


# --- what the page shows ---------------------------------------------------------------------


async def test_filters_narrow_the_table_and_show_the_withheld_fields_rules(
    signed: httpx.AsyncClient, data: dict[str, Any]
) -> None:
    everything = rows_of((await signed.get("/dashboard")).text, "decisions-table")
    assert {r["partner"] for r in everything} >= set(PARTNERS)

    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00")
    page = await signed.get(
        "/dashboard", params={"partner": "metro-police", "from": today, "outcome": ""}
    )
    html = page.text
    rows = rows_of(html, "decisions-table")
    assert len(rows) >= 12 and {r["partner"] for r in rows} == {"metro-police"}
    police = [r for r in data["records"] if r["partner_id"] == "metro-police"]
    withheld = {(w["field"], rule) for r in police for w in r["withheld"] for rule in w["rules"]}
    assert withheld, "law enforcement should have had fields withheld"
    for field, rule in withheld:
        assert f"<code>{field}</code>: " in html
        assert f'<span class="rule">{rule}</span>' in html
    assert 'value="metro-police"' in html  # the form shows what is applied
    assert_no_values(html)

    deny = rows_of(
        (await signed.get("/dashboard", params={"outcome": "deny"})).text, "decisions-table"
    )
    assert deny and {r["outcome"] for r in deny} == {"deny"}
    survivor = data["records"][0]["survivor_id"]
    one = rows_of(
        (await signed.get("/dashboard", params={"survivor": survivor})).text, "decisions-table"
    )
    assert len(one) == len(PARTNERS)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00")
    none = (await signed.get("/dashboard", params={"from": tomorrow})).text
    assert rows_of(none, "decisions-table") == [] and "No decision matches" in none

    wrong = await signed.get("/dashboard", params={"partner": "<script>", "from": "soon"})
    assert wrong.status_code == 200  # said on the page, not a JSON 422
    assert "has characters a name cannot have" in wrong.text
    assert "is not a date and time" in wrong.text and "<script>" not in wrong.text


async def test_paging_walks_back_through_the_decisions(signed: httpx.AsyncClient) -> None:
    html = (await signed.get("/dashboard", params={"size": 10})).text
    first = rows_of(html, "decisions-table")
    assert len(first) == 10
    older = re.search(r'href="/dashboard\?([^"]*before=\d+[^"]*)" rel="next"', html)
    assert older is not None
    second = rows_of(
        (await signed.get(f"/dashboard?{older.group(1).replace('&amp;', '&')}")).text,
        "decisions-table",
    )
    assert len(second) == 10
    assert max(int(r["seq"]) for r in second) < min(int(r["seq"]) for r in first)


async def test_the_chart_counts_per_day_and_suppresses_small_counts(
    signed: httpx.AsyncClient, data: dict[str, Any]
) -> None:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    html = (await signed.get("/dashboard", params={"partner": "metro-police", "from": today})).text
    table = html[html.index('id="chart-table"') :]
    row = re.search(rf"<th scope=\"row\">{today}</th>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>", table)
    assert row is not None
    refused = sum(
        1 for r in data["records"] if r["partner_id"] == "metro-police" and not r["released"]
    )
    assert refused >= 12
    assert int(row.group(2)) >= refused  # earlier tests in this database may add more
    assert 'class="bar refused"' in html and "<title" in html
    # One survivor's decisions are far below the threshold of 11: suppressed, not counted.
    survivor = data["records"][0]["survivor_id"]
    small = (await signed.get("/dashboard", params={"survivor": survivor})).text
    small_table = small[small.index('id="chart-table"') :]
    row = re.search(
        rf"<th scope=\"row\">{today}</th>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>", small_table
    )
    assert row is not None and row.groups() == ("suppressed", "suppressed")
    assert 'class="bar released"' not in small and 'class="bar refused"' not in small


async def test_mark_reviewed_from_the_queue(
    signed: httpx.AsyncClient, data: dict[str, Any], sessions: sessionmaker[Session]
) -> None:
    seq, survivor = data["review"].seq, data["review"].survivor_id
    # The queue is narrowed by the filters too: this survivor's release, and none for police.
    html = (await signed.get("/dashboard", params={"survivor": survivor})).text
    assert {r["seq"] for r in rows_of(html, "review-table")} == {str(seq)}
    police = (await signed.get("/dashboard", params={"partner_type": "law_enforcement"})).text
    assert str(seq) not in queue_of(police)
    resp = await signed.post(
        f"/dashboard/reviews/{seq}?survivor={survivor}", data={"csrf": csrf_of(html)}
    )
    assert resp.status_code == 303
    assert (
        resp.headers["location"]
        == f"/dashboard?survivor={survivor}&review=done&seq={seq}#review-queue"
    )
    after = (await signed.get(resp.headers["location"].split("#")[0])).text
    assert f"Decision {seq} was marked reviewed" in after
    assert str(seq) not in queue_of(after)
    again = await signed.post(f"/dashboard/reviews/{seq}", data={"csrf": csrf_of(after)})
    assert "review=already" in again.headers["location"]
    with sessions() as session:
        review = session.scalar(
            select(AuditEntry).where(AuditEntry.entry_key == f"review:{data['review'].entry_key}")
        )
    assert review is not None and json.loads(review.record)["by"] == "cmp-d"
    refused = next(r for r in data["records"] if r["outcome"] == "deny")
    with sessions() as session:
        refused_seq = session.scalar(
            select(AuditEntry.seq).where(
                AuditEntry.entry_key == chain.decision_key(refused["event_id"], "metro-police")
            )
        )
    nope = await signed.post(f"/dashboard/reviews/{refused_seq}", data={"csrf": csrf_of(after)})
    assert "review=not_found" in nope.headers["location"]


async def test_the_chain_status_shows_the_first_broken_entry(
    signed: httpx.AsyncClient, data: dict[str, Any], sessions: sessionmaker[Session]
) -> None:
    html = (await signed.get("/dashboard")).text
    token = csrf_of(html)
    await signed.post("/dashboard/verify", data={"csrf": token})
    assert 'data-ok="true"' in (await signed.get("/dashboard")).text
    record = data["records"][5]
    key = chain.decision_key(record["event_id"], record["partner_id"])
    with sessions() as session:
        row = session.scalar(select(AuditEntry).where(AuditEntry.entry_key == key))
        assert row is not None
        seq, original = row.seq, row.record
    altered = original.replace('"outcome":"', '"outcome":"x', 1)
    assert altered != original
    try:
        with transaction(sessions) as session:
            session.execute(
                text("UPDATE audit_entries SET record = :r WHERE seq = :s"),
                {"r": altered, "s": seq},
            )
        assert (await signed.post("/dashboard/verify", data={"csrf": token})).status_code == 303
        broken = (await signed.get("/dashboard")).text
        assert 'data-ok="false"' in broken
        assert f'<strong id="first-broken">{seq}</strong>' in broken and "altered" in broken
    finally:
        with transaction(sessions) as session:
            session.execute(
                text("UPDATE audit_entries SET record = :r WHERE seq = :s"),
                {"r": original, "s": seq},
            )
        await signed.post("/dashboard/verify", data={"csrf": token})
    assert 'data-ok="true"' in (await signed.get("/dashboard")).text


# --- in a real browser -----------------------------------------------------------------------


def chromium() -> tuple[str, str]:
    """Debian's chromium and chromium-driver, installed by deploy/browser.sh if missing (as
    `make test` does); skip, saying why, only when they cannot be installed here."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        script = REPO_ROOT / "deploy" / "browser.sh"
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
        found = shutil.which("chromium"), shutil.which("chromedriver")
        if not all(found):
            pytest.skip(
                "Chromium could not be installed (deploy/browser.sh: "
                f"{(done.stderr or done.stdout).strip()[-300:]})"
            )
    browser, driver = found
    assert browser and driver
    return browser, driver


UNLABELLED_JS = """
return Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter(el => el.type !== 'hidden')
  .filter(el => {
    const byLabel = el.labels && Array.from(el.labels).some(l => l.textContent.trim());
    const byAria = (el.getAttribute('aria-label') || '').trim() ||
      (el.getAttribute('aria-labelledby') || '').split(/\\s+/).some(id => {
        const t = id && document.getElementById(id); return t && t.textContent.trim();
      });
    const byText = el.tagName === 'BUTTON' && el.textContent.trim();
    return !(byLabel || byAria || byText);
  })
  .map(el => el.outerHTML.slice(0, 120));
"""


def drive(base: str, key: str, survivor: str, review_seq: int, shot: Path) -> dict[str, Any]:
    """The browser session itself (blocking; run in a thread, the API shares this loop)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,2000")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    seen: dict[str, Any] = {}
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(f"{base}/dashboard")
        wait.until(ec.url_contains("/dashboard/login"))
        seen["login_unlabelled"] = driver.execute_script(UNLABELLED_JS)

        # Keyboard only: Tab from the top of the page to the key field, type, Enter.
        driver.execute_script("document.activeElement && document.activeElement.blur()")
        body = driver.find_element(By.TAG_NAME, "body")
        body.click()
        tabs = 0
        while driver.switch_to.active_element.get_attribute("id") != "key":
            driver.switch_to.active_element.send_keys(Keys.TAB)
            tabs += 1
            assert tabs < 10, "the key field cannot be reached with Tab"
        seen["tabs_to_key"] = tabs
        driver.switch_to.active_element.send_keys(key, Keys.ENTER)
        wait.until(ec.presence_of_element_located((By.ID, "decisions-table")))
        seen["dashboard_unlabelled"] = driver.execute_script(UNLABELLED_JS)

        # Filter to one partner and one survivor (type, then Enter submits the filter form).
        driver.find_element(By.ID, "f-survivor").send_keys(survivor)
        driver.find_element(By.ID, "f-partner").send_keys("rules-cps-a", Keys.ENTER)
        wait.until(ec.url_contains("partner=rules-cps-a"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#decisions-table tbody tr[data-seq]")
        seen["partners"] = {r.get_attribute("data-partner") for r in rows}
        seen["rules"] = [
            e.text for e in driver.find_elements(By.CSS_SELECTOR, "#decisions-table .rule")
        ]
        seen["filtered_html"] = driver.page_source

        # Mark the legal-basis release reviewed: focus its button and press Enter.
        button = driver.find_element(By.ID, f"review-{review_seq}")
        driver.execute_script("arguments[0].focus()", button)
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        result = wait.until(ec.presence_of_element_located((By.ID, "review-result")))
        seen["review_result"] = result.text
        seen["after_review_url"] = driver.current_url
        seen["queue"] = {
            r.get_attribute("data-seq")
            for r in driver.find_elements(By.CSS_SELECTOR, "#review-table tbody tr")
        }
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        seen["final_html"] = driver.page_source
    finally:
        driver.quit()
    return seen


async def test_in_headless_chromium_sign_in_filter_and_review_by_keyboard(
    api: str,
    keys: dict[str, str],
    data: dict[str, Any],
    settings: Settings,
    producer: AIOKafkaProducer,
    sessions: sessionmaker[Session],
) -> None:
    await asyncio.to_thread(chromium)
    pending = await screening(settings, producer, sessions)
    shot = ARTIFACTS / "dashboard-reviewed.png"
    assert pending.survivor_id is not None
    seen = await asyncio.to_thread(
        drive, api, keys["compliance"], pending.survivor_id, pending.seq, shot
    )
    assert seen["login_unlabelled"] == [] and seen["dashboard_unlabelled"] == []
    assert seen["partners"] == {"rules-cps-a"}
    assert seen["rules"] and all(re.fullmatch(r"R\d+", r) for r in seen["rules"])
    assert f"Decision {pending.seq} was marked reviewed" in seen["review_result"]
    assert "partner=rules-cps-a" in seen["after_review_url"]  # the filters are kept
    assert str(pending.seq) not in seen["queue"]
    assert shot.stat().st_size > 10_000
    for html in (seen["filtered_html"], seen["final_html"]):
        assert_no_values(html)
    with sessions() as session:
        assert session.scalar(
            select(AuditEntry.seq).where(AuditEntry.entry_key == f"review:{pending.entry_key}")
        )


async def test_a_stale_verify_status_is_refreshed_in_the_background(
    signed: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page never waits for a full verify once one has run: it shows the last report and
    starts the next (the API runs in this process, so the TTL can be shortened here)."""
    from services.dashboard import views

    checked = re.compile(r"Checked at ([0-9: -]+) UTC")
    html = (await signed.get("/dashboard")).text
    first = checked.search(html)
    assert first is not None
    monkeypatch.setattr(views, "VERIFY_TTL_S", 0.0)
    await asyncio.sleep(1.1)
    stale = (await signed.get("/dashboard")).text
    assert "a new check is running" in stale
    deadline = time.monotonic() + 30
    while True:
        await asyncio.sleep(0.3)
        later = checked.search((await signed.get("/dashboard")).text)
        assert later is not None
        if later.group(1) != first.group(1) or time.monotonic() > deadline:
            break
    assert later.group(1) > first.group(1)


# --- the referrals page in a real browser -----------------------------------------------------


def delivered_referral(
    settings: Settings, sessions: sessionmaker[Session], *, overdue: bool
) -> str:
    """A referral made and delivered by the relay's decision to lighthouse-shelter (as the
    relay's decision record would); ``overdue`` set as the deadline worker sets it."""
    from services.audit import store
    from services.audit.signing import appender_key
    from services.broker.pipeline.model import Decision
    from services.referrals import service
    from services.referrals.models import Referral
    from services.registry.models import Partner

    allow = Decision(True, ("service_needs",), (), ("consent",), ("R2",), (), (), False, "rev")
    tag = uuid.uuid4().hex[:8]
    at = datetime.now(UTC) - timedelta(days=3)
    appending = store.with_appender(sessions, appender_key(settings))
    with transaction(appending) as session:
        partner = session.get(Partner, "lighthouse-shelter")
        assert partner is not None
        r = service.make(
            session=session, agency_id="harbor-outreach", by="adv-d", survivor_id=f"sv-ref-{tag}",
            partner=partner, addressed_as="partner", purpose="service_referral",
            event_id=f"evt-ref-{tag}", supersedes=None, decision=allow, now=at,
        )  # fmt: skip
        service.on_decision(session, {
            "event_id": r.event_id, "event_type": "accord.referral.made",
            "agency_id": "harbor-outreach", "partner_id": "lighthouse-shelter",
            "delivery_id": f"d-{tag}", "outcome": "allow", "released": ["service_needs"],
            "withheld": [], "reasons": ["R2"], "decided_at": at.isoformat(),
        })  # fmt: skip
        rid = r.id
    with transaction(sessions) as session:
        row = session.get(Referral, rid)
        assert row is not None and row.state == "delivered"
        row.overdue = overdue
    return rid


def drive_referrals(base: str, key: str, shot: Path) -> dict[str, Any]:
    """Sign in by keyboard, open the referrals page, follow "only overdue" (blocking)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,2000")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    seen: dict[str, Any] = {}
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(f"{base}/dashboard/referrals")
        wait.until(ec.url_contains("/dashboard/login"))  # no cookie: the login first
        driver.find_element(By.ID, "key").send_keys(key, Keys.ENTER)
        wait.until(ec.presence_of_element_located((By.ID, "decisions-table")))
        driver.get(f"{base}/dashboard/referrals")
        wait.until(ec.presence_of_element_located((By.ID, "referrals-table")))
        seen["unlabelled"] = driver.execute_script(UNLABELLED_JS)
        seen["all"] = {
            r.get_attribute("data-referral"): r.get_attribute("data-overdue")
            for r in driver.find_elements(By.CSS_SELECTOR, "#referrals-table tbody tr")
        }
        seen["all_html"] = driver.page_source
        link = driver.find_element(By.ID, "only-overdue")
        driver.execute_script("arguments[0].focus()", link)
        driver.switch_to.active_element.send_keys(Keys.ENTER)  # by keyboard
        wait.until(ec.url_contains("overdue=1"))
        wait.until(ec.presence_of_element_located((By.ID, "referrals-table")))
        seen["overdue"] = {
            r.get_attribute("data-referral"): r.get_attribute("data-overdue")
            for r in driver.find_elements(By.CSS_SELECTOR, "#referrals-table tbody tr")
        }
        seen["heading"] = driver.find_element(By.ID, "open-h").text
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        seen["overdue_html"] = driver.page_source
    finally:
        driver.quit()
    return seen


async def test_in_headless_chromium_the_referrals_page_lists_open_and_overdue_referrals(
    api: str, keys: dict[str, str], settings: Settings, sessions: sessionmaker[Session]
) -> None:
    await asyncio.to_thread(chromium)
    late = delivered_referral(settings, sessions, overdue=True)
    on_time = delivered_referral(settings, sessions, overdue=False)
    shot = ARTIFACTS / "dashboard-referrals.png"
    seen = await asyncio.to_thread(drive_referrals, api, keys["compliance"], shot)
    assert seen["unlabelled"] == []
    assert seen["all"][late] == "true" and seen["all"][on_time] == "false"
    assert late in seen["overdue"] and on_time not in seen["overdue"]
    assert set(seen["overdue"].values()) == {"true"}
    assert seen["heading"] == "Overdue referrals"
    assert shot.stat().st_size > 10_000
    for html in (seen["all_html"], seen["overdue_html"]):
        assert_no_values(html)
