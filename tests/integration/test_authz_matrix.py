"""Every route × every role (and no key) → the expected status class, from one table.

``MATRIX`` below is the single source: a route of the app without a row fails
``test_every_route_has_a_row``, so a new endpoint cannot ship without deciding who may call
it. Each cell is then called against the real API:

- ``ok``  — the role is admitted: anything but 401/403 (a 404/409/422 from the handler is
  fine: the request got past authentication and the role check), and never a 5xx;
- ``401`` — no or bad credentials;
- ``403`` — a valid credential of a role the route does not admit.

Path parameters are ones the admitted roles may use (their own survivor, an existing
consent...), so an admitted role is told apart from a 403. A second test checks the scoping
inside a role: another survivor's survivor, guardian or advocate gets 403 on every route
about a survivor.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from services.api import create_app
from services.auth.models import Credential
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import make_engine, make_sessionmaker, transaction
from services.settings import Settings

pytestmark = pytest.mark.integration

COLUMNS = (
    "anon",
    "agency",
    "partner",
    "survivor",
    "advocate",
    "guardian",
    "supervisor",
    "compliance",
    "admin",
)

# fmt: off
# One row per route: (method, path template) → one cell per column above.
#                                                                    anon agency partnr survvr advoct guardn suprvs compln admin  # noqa: E501
MATRIX: dict[tuple[str, str], str] = {
    # Framework pages: public by design (no data; the OpenAPI document describes the API).
    ("GET", "/openapi.json"):                                        "ok  ok  ok  ok  ok  ok  ok  ok  ok",  # noqa: E501
    ("GET", "/docs"):                                                "ok  ok  ok  ok  ok  ok  ok  ok  ok",  # noqa: E501
    ("GET", "/docs/oauth2-redirect"):                                "ok  ok  ok  ok  ok  ok  ok  ok  ok",  # noqa: E501
    ("GET", "/redoc"):                                               "ok  ok  ok  ok  ok  ok  ok  ok  ok",  # noqa: E501
    # Probes and scrapes: public by design (check names, true/false, bounded metrics).
    ("GET", "/healthz"):                                             "ok  ok  ok  ok  ok  ok  ok  ok  ok",  # noqa: E501
    ("GET", "/readyz"):                                              "ok  ok  ok  ok  ok  ok  ok  ok  ok",  # noqa: E501
    ("GET", "/metrics"):                                             "ok  ok  ok  ok  ok  ok  ok  ok  ok",  # noqa: E501
    # Ingest, rejections and the keys events are sealed with: agencies only.
    ("POST", "/v1/events"):                                          "401 ok  403 403 403 403 403 403 403",  # noqa: E501
    ("GET", "/v1/events/rejected"):                                  "401 ok  403 403 403 403 403 403 403",  # noqa: E501
    ("GET", "/v1/events/keys/{survivor_id}"):                        "401 ok  403 403 403 403 403 403 403",  # noqa: E501
    # Registry administration: admins only.
    ("PUT", "/v1/admin/agencies/{agency_id}"):                       "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("GET", "/v1/admin/agencies"):                                   "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("GET", "/v1/admin/agencies/{agency_id}"):                       "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("PUT", "/v1/admin/partners/{partner_id}"):                      "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("GET", "/v1/admin/partners"):                                   "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("GET", "/v1/admin/partners/{partner_id}"):                      "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("PATCH", "/v1/admin/partners/{partner_id}"):                    "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("PUT", "/v1/admin/partners/{partner_id}/subscriptions/{subscription_id}"):  "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("DELETE", "/v1/admin/partners/{partner_id}/subscriptions/{subscription_id}"): "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    # Partner feed: partners only (each its own topic).
    ("GET", "/v1/feed"):                                             "401 403 ok  403 403 403 403 403 403",  # noqa: E501
    ("POST", "/v1/feed/ack"):                                        "401 403 ok  403 403 403 403 403 403",  # noqa: E501
    # Survivors: advocates register and enroll; the enrollment code is the credential of /enroll.
    ("POST", "/v1/survivors"):                                       "401 403 403 403 ok  403 403 403 403",  # noqa: E501
    ("PUT", "/v1/survivors/{survivor_id}/guardians"):                "401 403 403 403 ok  403 403 403 403",  # noqa: E501
    ("POST", "/v1/survivors/{survivor_id}/enrollment-codes"):        "401 403 403 403 ok  403 403 403 403",  # noqa: E501
    ("POST", "/v1/enroll"):                                          "ok  ok  ok  ok  ok  ok  ok  ok  ok",  # noqa: E501
    # Consents, preview, disclosures, FHIR: the survivor, their agency's advocate, a guardian.
    ("GET", "/v1/survivors/{survivor_id}/consents"):                 "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("POST", "/v1/survivors/{survivor_id}/consents"):                "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("PUT", "/v1/survivors/{survivor_id}/consents/{consent_id}"):    "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("POST", "/v1/survivors/{survivor_id}/consents/{consent_id}/revoke"):  "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("GET", "/v1/survivors/{survivor_id}/consents/{consent_id}/versions"):  "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("GET", "/v1/survivors/{survivor_id}/consents/{consent_id}/versions/{number}"):  "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("POST", "/v1/survivors/{survivor_id}/preview"):                 "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("GET", "/v1/survivors/{survivor_id}/disclosures"):              "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("GET", "/v1/survivors/{survivor_id}/consents/{consent_id}/fhir"):  "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("POST", "/v1/survivors/{survivor_id}/consents/fhir"):           "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    # Safe contact: as consents; the agency's list of notices to deliver: advocates.
    ("PUT", "/v1/survivors/{survivor_id}/contact-preference"):       "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("GET", "/v1/survivors/{survivor_id}/contact-preference"):       "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("GET", "/v1/survivors/{survivor_id}/notices"):                  "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    ("GET", "/v1/notices"):                                          "401 403 403 403 ok  403 403 403 403",  # noqa: E501
    # Legal bases (R8, R9): supervisors only.
    ("POST", "/v1/survivors/{survivor_id}/declarations"):            "401 403 403 403 403 403 ok  403 403",  # noqa: E501
    ("POST", "/v1/survivors/{survivor_id}/declarations/{declaration_id}/end"):  "401 403 403 403 403 403 ok  403 403",  # noqa: E501
    ("POST", "/v1/survivors/{survivor_id}/court-orders"):            "401 403 403 403 403 403 ok  403 403",  # noqa: E501
    # Referrals: agencies make them; the addressed partner and the referrer (an agency, its
    # supervisors) move them; compliance reads too; the survivor side sees theirs.
    ("POST", "/v1/referrals"):                                       "401 ok  403 403 403 403 403 403 403",  # noqa: E501
    ("GET", "/v1/referrals"):                                        "401 ok  ok  403 403 403 ok  ok  403",  # noqa: E501
    ("GET", "/v1/referrals/codes"):                                  "401 ok  ok  403 403 403 ok  ok  403",  # noqa: E501
    ("GET", "/v1/referrals/{referral_id}"):                          "401 ok  ok  403 403 403 ok  ok  403",  # noqa: E501
    ("GET", "/v1/referrals/{referral_id}/fhir"):                     "401 ok  ok  403 403 403 ok  ok  403",  # noqa: E501
    ("PUT", "/v1/referrals/{referral_id}/fhir"):                     "401 403 ok  403 403 403 403 403 403",  # noqa: E501
    ("POST", "/v1/referrals/{referral_id}/{action}"):                "401 ok  ok  403 403 403 ok  403 403",  # noqa: E501
    ("GET", "/v1/survivors/{survivor_id}/referrals"):                "401 403 403 ok  ok  ok  403 403 403",  # noqa: E501
    # Referral oversight (services/referrals/oversight_views.py): alerts for supervisors (their
    # agency's) and compliance; marking one seen is a supervisor's; the R15 figures, compliance.
    ("GET", "/v1/referral-oversight/alerts"):                        "401 403 403 403 403 403 ok  ok  403",  # noqa: E501
    ("POST", "/v1/referral-oversight/alerts/{alert_id}/seen"):       "401 403 403 403 403 403 ok  403 403",  # noqa: E501
    ("GET", "/v1/referral-oversight/report"):                        "401 403 403 403 403 403 403 ok  403",  # noqa: E501
    # Audit: compliance only.
    ("GET", "/v1/audit/decisions"):                                  "401 403 403 403 403 403 403 ok  403",  # noqa: E501
    ("GET", "/v1/audit/decisions/export"):                           "401 403 403 403 403 403 403 ok  403",  # noqa: E501
    ("GET", "/v1/audit/reports/rules"):                              "401 403 403 403 403 403 403 ok  403",  # noqa: E501
    ("GET", "/v1/audit/reports/consents"):                           "401 403 403 403 403 403 403 ok  403",  # noqa: E501
    ("GET", "/v1/audit/reviews"):                                    "401 403 403 403 403 403 403 ok  403",  # noqa: E501
    ("POST", "/v1/audit/reviews/{seq}"):                             "401 403 403 403 403 403 403 ok  403",  # noqa: E501
    ("GET", "/v1/audit/verify"):                                     "401 403 403 403 403 403 403 ok  403",  # noqa: E501
    # Credentials: every principal rotates its own key; admins issue, list and revoke anyone's.
    ("POST", "/v1/credentials/rotate"):                              "401 ok  ok  ok  ok  ok  ok  ok  ok",  # noqa: E501
    ("GET", "/v1/admin/credentials"):                                "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("POST", "/v1/admin/credentials"):                               "401 403 403 403 403 403 403 403 ok",  # noqa: E501
    ("POST", "/v1/admin/credentials/{credential_id}/revoke"):        "401 403 403 403 403 403 403 403 ok",  # noqa: E501
}
# fmt: on

# The compliance dashboard (services/dashboard/): HTML pages behind their own cookie login and
# CSRF tokens, not the bearer-key API. Each route is still listed, with what a request that
# carries no session cookie gets: "public" (no data: the login form, the stylesheet; any
# non-5xx) or "cookie" (never a 2xx, whatever bearer key of whatever role it carries: a
# bearer key opens nothing on the dashboard). Sign-in itself is tested with the dashboard.
COOKIE_PREFIX = "/dashboard"
COOKIE_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/dashboard"): "cookie",
    ("GET", "/dashboard/login"): "public",
    ("GET", "/dashboard/referrals"): "cookie",
    ("POST", "/dashboard/login"): "cookie",
    ("POST", "/dashboard/logout"): "cookie",
    ("GET", "/dashboard/static/dashboard.css"): "public",
    ("POST", "/dashboard/reviews/{seq}"): "cookie",
    ("POST", "/dashboard/verify"): "cookie",
}


def expected(method: str, path: str) -> dict[str, str]:
    cells = MATRIX[(method, path)].split()
    assert len(cells) == len(COLUMNS), f"{method} {path}: {len(cells)} cells"
    assert set(cells) <= {"ok", "401", "403"}, f"{method} {path}: {cells}"
    return dict(zip(COLUMNS, cells, strict=True))


def app_routes() -> Iterator[tuple[str, str, Any]]:
    """(method, path template, original route) for every route the app serves."""
    app = create_app(Settings())
    for rc in iter_route_contexts(app.routes):
        path = rc.path
        if path is None:
            continue  # a mount without a path of its own
        for method in sorted((rc.methods or {"GET"}) - {"HEAD", "OPTIONS"}):
            yield method, path, rc.original_route


def _cookie_routes() -> set[tuple[str, str]]:
    return {(m, p) for m, p, _ in app_routes() if p.startswith(COOKIE_PREFIX)}


def test_every_route_has_a_row() -> None:
    served = set()
    for method, path, _ in app_routes():
        if path.startswith(COOKIE_PREFIX):
            continue
        served.add((method, path))
    cookie = _cookie_routes()
    unlisted = sorted(cookie - COOKIE_ROUTES.keys())
    assert not unlisted, f"dashboard routes without a row in COOKIE_ROUTES: {unlisted}"
    missing = sorted(served - MATRIX.keys())
    assert not missing, f"routes without a row in MATRIX (decide who may call them): {missing}"
    stale = sorted(MATRIX.keys() - served)
    assert not stale, f"rows in MATRIX for routes the app no longer serves: {stale}"
    for method, path in MATRIX:
        expected(method, path)  # well formed


# --- principals on the real API ---------------------------------------------------------------


@dataclass
class World:
    keys: dict[str, str | None]  # column → API key (None: no key)
    database: str
    survivor_id: str
    consent_id: str
    other_keys: dict[str, str]  # survivor-scoped roles of ANOTHER survivor / agency


SHELTER = "lighthouse-shelter"
EVIDENCE = {"kind": "form_reference", "reference": "signed form #9, kept at the agency"}
CONSENT = {
    "provisions": [
        {
            "type": "permit",
            "recipients": {"partners": [], "partner_types": ["shelter"]},
            "purposes": ["service_referral"],
            "categories": ["contact"],
            "period": {"start": "2026-01-01T00:00:00Z", "end": None},
        }
    ],
    "evidence": EVIDENCE,
}


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _survivor_with_guardian(
    http: httpx.AsyncClient, database: str, advocate: str
) -> tuple[str, str, str]:
    """A survivor registered by ``advocate``, their own key and a guardian's key."""
    survivor = f"sv-{uuid.uuid4().hex[:10]}"
    guardian = f"gd-{uuid.uuid4().hex[:10]}"
    r = await http.post("/v1/survivors", json={"survivor_id": survivor}, headers=_auth(advocate))
    assert r.status_code == 201, r.text
    r = await http.put(
        f"/v1/survivors/{survivor}/guardians",
        json={"guardian_id": guardian, "relation": "parent"},
        headers=_auth(advocate),
    )
    assert r.status_code == 204, r.text
    with transaction(make_sessionmaker(make_engine(database))) as session:
        own = issue_credential(session=session, role=Role.SURVIVOR, subject=survivor)
        guard = issue_credential(session=session, role=Role.GUARDIAN, subject=guardian)
    return survivor, own, guard


@pytest.fixture(scope="module")
async def world(api: str, database: str) -> World:
    with transaction(make_sessionmaker(make_engine(database))) as session:

        def key(role: Role, subject: str, agency: str | None = None) -> str:
            return issue_credential(session=session, role=role, subject=subject, agency_id=agency)

        keys: dict[str, str | None] = {
            "anon": None,
            "agency": key(Role.AGENCY, "harbor-outreach"),
            "partner": key(Role.PARTNER, SHELTER),
            "advocate": key(Role.ADVOCATE, "adv-matrix", "harbor-outreach"),
            "supervisor": key(Role.SUPERVISOR, "sup-matrix", "harbor-outreach"),
            "compliance": key(Role.COMPLIANCE, "cmp-matrix"),
            "admin": key(Role.ADMIN, "admin-matrix"),
        }
        other_advocate = key(Role.ADVOCATE, "adv-matrix-valley", "valley-school")
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        advocate = keys["advocate"]
        assert advocate is not None
        survivor, keys["survivor"], keys["guardian"] = await _survivor_with_guardian(
            http, database, advocate
        )
        _, other_survivor, other_guardian = await _survivor_with_guardian(
            http, database, other_advocate
        )
        r = await http.post(
            f"/v1/survivors/{survivor}/consents", json=CONSENT, headers=_auth(keys["survivor"])
        )
        assert r.status_code == 201, r.text
        consent_id = r.json()["id"]
    return World(
        keys=keys,
        database=database,
        survivor_id=survivor,
        consent_id=consent_id,
        other_keys={
            "survivor": other_survivor,
            "guardian": other_guardian,
            "advocate": other_advocate,
        },
    )


def _params(world: World) -> dict[str, str]:
    return {
        "survivor_id": world.survivor_id,
        "consent_id": world.consent_id,
        "number": "1",
        "agency_id": "harbor-outreach",
        "partner_id": SHELTER,
        "subscription_id": "sub-matrix-none",  # absent: an admitted DELETE answers 404
        "declaration_id": "dec-matrix-none",
        "seq": "999999999",
        "credential_id": "00000000000000ff",  # absent: an admitted revoke answers 404
        "referral_id": "ref-000000000000000000000000",  # absent: an admitted move answers 404
        "action": "acknowledge",
        "alert_id": "999999999",  # absent: an admitted mark-seen answers 404
    }


def _copy_of(world: World, key: str | None) -> str | None:
    """A second key of the same role and subject, so rotating it spends nothing shared."""
    if key is None or key not in world.keys.values():
        return key  # no key, or a bad one: stays as it is
    with transaction(make_sessionmaker(make_engine(world.database))) as session:
        cred = session.get(Credential, key.split("_")[1])
        if cred is None:
            return key
        return issue_credential(
            session=session, role=Role(cred.role), subject=cred.subject, agency_id=cred.agency_id
        )


async def _enrollment_code(http: httpx.AsyncClient, world: World) -> str:
    r = await http.post(
        f"/v1/survivors/{world.survivor_id}/enrollment-codes",
        json={},
        headers=_auth(world.keys["advocate"]),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


async def _call(
    http: httpx.AsyncClient, world: World, method: str, path: str, key: str | None
) -> httpx.Response:
    url = path.format(**_params(world))
    if path == "/v1/credentials/rotate":
        key = _copy_of(world, key)
    body: Any = None
    if method in {"POST", "PUT", "PATCH"}:
        # An empty object: a role check answers before the body is validated, so an admitted
        # role gets 422 (or the handler's answer) and a refused one 401/403. Nothing is changed.
        body = {}
        if path == "/v1/enroll":
            body = {"code": await _enrollment_code(http, world)}
    return await http.request(method, url, json=body, headers=_auth(key))


def _ok(expect: str, status: int) -> bool:
    if expect == "ok":
        return status not in (401, 403) and status < 500
    return status == int(expect)


async def test_every_cell(api: str, world: World) -> None:
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        for method, path in MATRIX:
            for column, expect in expected(method, path).items():
                r = await _call(http, world, method, path, world.keys[column])
                if not _ok(expect, r.status_code):
                    wrong.append(f"{method} {path} as {column}: {r.status_code}, want {expect}")
    assert not wrong, "\n".join(wrong)


async def test_a_bad_key_is_401_everywhere(api: str, world: World) -> None:
    """A malformed key, an unknown id and a wrong secret for a real id: 401 wherever a key is
    needed, never 403 or anything else."""
    real = world.keys["admin"]
    assert real is not None
    bad = ["nonsense", "acc_0000000000000000_" + "A" * 43, real[:-4] + "AAAA"]
    wrong = []
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        for method, path in MATRIX:
            if expected(method, path)["anon"] != "401":
                continue
            for key in bad:
                r = await _call(http, world, method, path, key)
                if r.status_code != 401:
                    wrong.append(f"{method} {path} with {key[:12]}…: {r.status_code}")
    assert not wrong, "\n".join(wrong)


async def test_another_survivors_roles_are_refused(api: str, world: World) -> None:
    """Survivor-scoped roles admitted by the table are refused on a survivor not theirs: the
    survivor and guardian of another survivor, an advocate of another agency. Checked on the
    routes whose handler runs without a body (with ``{}`` a 422 would come first)."""
    routes = {(m, p): r for m, p, r in app_routes()}
    wrong = []
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        for method, path in MATRIX:
            route = routes[(method, path)]
            if "{survivor_id}" not in path or not isinstance(route, APIRoute):
                continue
            if route.body_field is not None:
                continue
            for column, key in world.other_keys.items():
                if expected(method, path)[column] != "ok":
                    continue
                r = await _call(http, world, method, path, key)
                if r.status_code != 403:
                    wrong.append(f"{method} {path} as another {column}: {r.status_code}")
    assert not wrong, "\n".join(wrong)


async def test_dashboard_routes_need_the_cookie(api: str, world: World) -> None:
    wrong = []
    params = _params(world)
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        for (method, path), kind in COOKIE_ROUTES.items():
            if (method, path) not in _cookie_routes():
                continue  # not (yet) served
            for column in COLUMNS:
                r = await http.request(
                    method,
                    path.format(**params),
                    data={} if method == "POST" else None,
                    headers=_auth(world.keys[column]),
                )
                if r.status_code >= 500 or (kind == "cookie" and r.is_success):
                    wrong.append(f"{method} {path} as {column} (no cookie): {r.status_code}")
    assert not wrong, "\n".join(wrong)


# --- no existence oracle ------------------------------------------------------------------------

FHIR_EXAMPLE = Path(__file__).parents[1] / "unit" / "fhir_examples" / "permit.json"


def _valid_body(method: str, path: str, survivor: str) -> Any:
    """A body the handler accepts, so the request reaches the survivor check (an empty one
    would be refused by validation first, the same for any id). None: the route has none."""
    if path.endswith("/consents/fhir"):
        doc: dict[str, Any] = json.loads(FHIR_EXAMPLE.read_text())
        old = doc["patient"]["reference"]
        return json.loads(FHIR_EXAMPLE.read_text().replace(old, f"Patient/{survivor}"))
    return {
        ("PUT", "/v1/survivors/{survivor_id}/guardians"): {
            "guardian_id": "gd-oracle",
            "relation": "parent",
        },
        ("POST", "/v1/survivors/{survivor_id}/enrollment-codes"): {},
        ("POST", "/v1/survivors/{survivor_id}/consents"): CONSENT,
        ("PUT", "/v1/survivors/{survivor_id}/consents/{consent_id}"): CONSENT,
        ("POST", "/v1/survivors/{survivor_id}/preview"): {
            "partner_id": SHELTER,
            "event_type": "accord.referral.made",
        },
        ("POST", "/v1/survivors/{survivor_id}/declarations"): {
            "justification": "A credible threat to the survivor's life tonight."
        },
        ("PUT", "/v1/survivors/{survivor_id}/contact-preference"): {"do_not_contact": True},
        ("POST", "/v1/survivors/{survivor_id}/court-orders"): {
            "reference": "2026-CV-0099",
            "court": "State B District Court",
            "recipient": SHELTER,
            "fields": ["survivor_name"],
            "expires_at": "2030-01-01T00:00:00Z",
            "justification": "Order compelling disclosure",
        },
    }.get((method, path))


async def test_another_agencys_staff_cannot_tell_a_real_survivor_from_an_unknown_id(
    api: str, world: World
) -> None:
    """On every route about a survivor, each role of another agency (or another survivor)
    gets the same status and the same body for the real survivor as for an id no one ever
    registered: answers do not reveal whether a survivor exists."""
    with transaction(make_sessionmaker(make_engine(world.database))) as session:
        others = {
            **world.other_keys,
            "agency": issue_credential(session=session, role=Role.AGENCY, subject="valley-school"),
            "supervisor": issue_credential(
                session=session,
                role=Role.SUPERVISOR,
                subject="sup-oracle",
                agency_id="valley-school",
            ),
        }
    routes = {(m, p): r for m, p, r in app_routes()}
    wrong, refused, compared = [], 0, 0
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        for method, path in MATRIX:
            route = routes[(method, path)]
            if "{survivor_id}" not in path:
                continue
            if isinstance(route, APIRoute) and route.body_field is not None:
                assert _valid_body(method, path, "x") is not None, f"no body for {method} {path}"
            for column, key in others.items():
                if expected(method, path)[column] != "ok":
                    continue
                answers = []
                for survivor in (world.survivor_id, f"sv-{uuid.uuid4().hex[:10]}"):
                    url = path.format(**{**_params(world), "survivor_id": survivor})
                    body = _valid_body(method, path, survivor)
                    answers.append(await http.request(method, url, json=body, headers=_auth(key)))
                real, unknown = answers
                compared += 1
                refused += real.status_code == 403
                where = f"{method} {path} as another {column}"
                if real.status_code != unknown.status_code:
                    wrong.append(f"{where}: {real.status_code} real, {unknown.status_code} unknown")
                elif not real.is_success and real.content != unknown.content:
                    wrong.append(f"{where}: bodies differ ({real.text} / {unknown.text})")
    assert not wrong, "\n".join(wrong)
    assert compared >= 20 and refused >= 15  # the routes were really reached and refused
