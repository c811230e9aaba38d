"""Nothing a request carries comes back in an error, nor goes into the API's log.

Every operation of the OpenAPI document, with every role's key (and none): one request per
field, each path and query parameter and each leaf of the body, holding a canary instead of
its valid value; the other fields stay valid, so the request reaches the handler's own checks
(a signed event is signed again around its canary). Two canaries per field: free text with a
name, a phone number and an address (what a careless caller pastes), and an id-shaped one that
passes the id patterns. Each request's canary is unique, and then:

- no error answer (4xx, 5xx) contains it;
- a success contains it only when it is the resource the request stored (``STORES``), or its
  path names that resource (``GET /v1/events/keys/{survivor_id}`` answers with that id);
- no line the ``accord api`` process writes contains any canary.

The API runs as an ``accord api`` process (its real logging) on a database and topics of its
own, so the registry changes made here stay here.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from services.api import create_app
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.broker.pipeline import seal
from services.db import transaction
from services.events import provenance
from services.settings import Settings
from tests.integration.test_authz_matrix import COLUMNS, expected
from tests.support.api_process import accord_api
from tests.support.events import cloudevent
from tests.support.keys import AGENCY_KEYS
from tests.support.stack import kafka_ready, private_api

pytestmark = pytest.mark.integration

TOKEN = uuid.uuid4().hex[:12]  # in every canary: what the log and the answers are searched for
FHIR_PERMIT = Path(__file__).parents[1] / "unit" / "fhir_examples" / "permit.json"
FUTURE = "2030-01-01T00:00:00Z"
START = "2026-01-01T00:00:00Z"

Leaf = tuple[str | int, ...]  # where a value sits in a body: keys and list indices


@dataclass
class Target:
    base: str
    log: Path
    keys: dict[str, str | None]
    survivor: str
    consent: str


@dataclass
class Request:
    method: str
    template: str
    path: dict[str, Any]
    query: dict[str, Any]
    body: Any = None
    content_type: str = "application/json"


def _bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="module")
async def target(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    s, sessions = private_api(settings, "echo")
    survivor, guardian = f"sv-echo-{uuid.uuid4().hex[:8]}", "gd-echo"
    with transaction(sessions) as session:

        def key(role: Role, subject: str, agency: str | None = None) -> str:
            return issue_credential(session=session, role=role, subject=subject, agency_id=agency)

        keys: dict[str, str | None] = {
            "anon": None,
            "agency": key(Role.AGENCY, "harbor-outreach"),
            "partner": key(Role.PARTNER, "lighthouse-shelter"),
            "survivor": key(Role.SURVIVOR, survivor),
            "advocate": key(Role.ADVOCATE, "adv-echo", "harbor-outreach"),
            "guardian": key(Role.GUARDIAN, guardian),
            "supervisor": key(Role.SUPERVISOR, "sup-echo", "harbor-outreach"),
            "compliance": key(Role.COMPLIANCE, "cmp-echo"),
            "admin": key(Role.ADMIN, "admin-echo"),
        }
    await kafka_ready(s)
    log = tmp_path_factory.mktemp("echo") / "api.log"
    base = f"http://127.0.0.1:{s.api_port}"
    async with (
        accord_api(s, log, ready=f"{base}/openapi.json"),
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        advocate = _bearer(keys["advocate"])
        r = await http.post("/v1/survivors", json={"survivor_id": survivor}, headers=advocate)
        assert r.status_code == 201, r.text
        r = await http.put(
            f"/v1/survivors/{survivor}/guardians",
            json={"guardian_id": guardian, "relation": "parent"},
            headers=advocate,
        )
        assert r.status_code == 204, r.text
        r = await http.post(f"/v1/survivors/{survivor}/consents", json=CONSENT, headers=advocate)
        assert r.status_code == 201, r.text
        yield Target(base, log, keys, survivor, r.json()["id"])


# --- valid requests, one per operation (two for the feed's ack) ------------------------------

PROVISION = {
    "type": "permit",
    "recipients": {"partners": ["lighthouse-shelter"], "partner_types": ["shelter"]},
    "purposes": ["service_referral"],
    "categories": ["contact"],
    "period": {"start": START, "end": FUTURE},
}
CONSENT: dict[str, Any] = {
    "provisions": [PROVISION],
    "evidence": {"kind": "form_reference", "reference": "signed form #4, kept at the agency"},
}
VERIFY_KEY = provenance.public_key_of(SigningKey.generate())
SEAL_KEY = seal.public_key_of(PrivateKey.generate())
QUERY = {
    "cursor": None,  # None: left out of the valid request, still given a canary
    "limit": 10,
    "wait": 0,
    "after": 0,
    "code": "signature_invalid",
    "from": START,
    "to": FUTURE,
    "agency": "harbor-outreach",
    "partner": "lighthouse-shelter",
    "partner_type": "shelter",
    "unseen": True,
    "event_type": "accord.referral.made",
    "basis": "consent",
    "rule": "R2",
    "outcome": "allow",
    "survivor": "sv-echo",
    "format": "jsonl",
    "period": "day",
    "subject": "adv-echo",
    "version": 1,
    "state": "delivered",
}


def _fhir(survivor: str) -> dict[str, Any]:
    text = FHIR_PERMIT.read_text()
    old = json.loads(text)["patient"]["reference"]
    doc: dict[str, Any] = json.loads(text.replace(old, f"Patient/{survivor}"))
    return doc


def bodies(t: Target) -> dict[tuple[str, str], list[Any]]:
    """Valid bodies, every optional field given, so that a canary can go in each."""
    survivors = "/v1/survivors/{survivor_id}"
    return {
        ("POST", "/v1/events"): [
            cloudevent(
                "harbor-outreach",
                t.survivor,
                {"survivor_name": "E", "referral_reason": "housing", "age": 30},
                datacontenttype="application/json",
            )
        ],
        ("PUT", "/v1/admin/agencies/{agency_id}"): [
            {"name": "Echo Agency", "jurisdiction": "state-a", "public_key": VERIFY_KEY}
        ],
        ("PUT", "/v1/admin/partners/{partner_id}"): [
            {
                "name": "Echo Partner",
                "type": "shelter",
                "jurisdiction": "state-a",
                "status": "active",
                "vetted": True,
                "immigration_enforcement": False,
                "training_attested_until": FUTURE,
                "public_key": SEAL_KEY,
                "agreements": [
                    {
                        "id": "echo-mou",
                        "purposes": ["service_referral"],
                        "categories": ["contact"],
                        "valid_from": START,
                        "valid_until": FUTURE,
                    }
                ],
                "subscriptions": {
                    "echo-sub": {
                        "event_types": ["accord.referral.made"],
                        "purpose": "service_referral",
                    }
                },
            }
        ],
        ("PATCH", "/v1/admin/partners/{partner_id}"): [
            {
                "status": "active",
                "vetted": True,
                "training_attested_until": FUTURE,
                "public_key": SEAL_KEY,
            }
        ],
        ("PUT", "/v1/admin/partners/{partner_id}/subscriptions/{subscription_id}"): [
            {"event_types": ["accord.referral.made"], "purpose": "service_referral"}
        ],
        ("POST", "/v1/feed/ack"): [{"cursor": "e30"}, {"delivery_ids": ["dlv-echo"]}],
        ("POST", "/v1/admin/credentials"): [
            {"role": "advocate", "subject": "adv-echo-2", "agency_id": "harbor-outreach"}
        ],
        ("POST", "/v1/survivors"): [{"survivor_id": f"sv-echo-new-{uuid.uuid4().hex[:6]}"}],
        ("PUT", f"{survivors}/guardians"): [
            {"guardian_id": "gd-echo-2", "relation": "aunt", "suspect": False}
        ],
        ("POST", f"{survivors}/enrollment-codes"): [{"role": "guardian", "guardian_id": "gd-echo"}],
        ("POST", "/v1/enroll"): [{"code": "00000000-0000000000000000"}],
        ("POST", f"{survivors}/consents"): [CONSENT],
        ("PUT", f"{survivors}/consents/{{consent_id}}"): [CONSENT],
        ("POST", f"{survivors}/preview"): [
            {
                "partner_id": "lighthouse-shelter",
                "event_type": "accord.referral.made",
                "fields": ["survivor_name"],
                "purpose": "service_referral",
                "age": 30,
                "draft": CONSENT,
            }
        ],
        ("POST", f"{survivors}/consents/fhir"): [_fhir(t.survivor)],
        ("PUT", f"{survivors}/contact-preference"): [
            {
                "do_not_contact": False,
                "channels": ["phone_call"],
                "safe_times": [{"days": ["mon"], "start": "09:00", "end": "17:00"}],
                "time_zone": "Europe/Berlin",
                "code_word": "swallow",
            }
        ],
        ("POST", f"{survivors}/declarations"): [
            {"justification": "A credible threat to the survivor tonight.", "tell_survivor": False}
        ],
        ("POST", "/v1/referrals"): [
            {
                "to": {"partner_id": "lighthouse-shelter"},
                "purpose": "service_referral",
                "supersedes": "ref-000000000000000000000000",
                "event": cloudevent(
                    "harbor-outreach",
                    t.survivor,
                    {"survivor_name": "E", "referral_reason": "housing", "age": 30},
                    datacontenttype="application/json",
                ),
            },
            {
                "to": {"partner_type": "shelter", "jurisdiction": "state-a"},
                "purpose": "service_referral",
                "event": cloudevent("harbor-outreach", t.survivor, {"age": 30}),
            },
        ],
        ("POST", "/v1/referrals/{referral_id}/{action}"): [
            {"code": "no_capacity", "note": "Full until Friday."}
        ],
        ("PUT", "/v1/referrals/{referral_id}/fhir"): [
            {
                "resourceType": "Task",
                "id": "ref-000000000000000000000000",
                "status": "rejected",
                "intent": "order",
                "statusReason": {
                    "coding": [{"system": "urn:accord:referral-reason", "code": "no_capacity"}]
                },
                "note": [{"text": "No bed until Friday."}],
            }
        ],
        ("POST", f"{survivors}/court-orders"): [
            {
                "reference": "2026-CV-0101",
                "court": "State A Family Court",
                "recipient": "lighthouse-shelter",
                "fields": ["survivor_name"],
                "expires_at": FUTURE,
                "justification": "Order compelling disclosure",
            }
        ],
    }


def path_values(t: Target) -> dict[str, Any]:
    return {
        "survivor_id": t.survivor,
        "consent_id": t.consent,
        "number": 1,
        "agency_id": "echo-agency",
        "partner_id": "echo-partner",
        "subscription_id": "echo-sub",
        "declaration_id": "decl-echo-none",
        "seq": 999999,
        "credential_id": "00000000000000ff",  # no such key: nothing real is revoked
        "referral_id": "ref-000000000000000000000000",  # no such referral
        "alert_id": 999999,  # no such alert
        "action": "acknowledge",
    }


# Operations whose success answers with the resource the request stored (or named).
STORES = {
    ("POST", "/v1/events"),  # the accepted event's id
    ("PUT", "/v1/admin/agencies/{agency_id}"),
    ("PUT", "/v1/admin/partners/{partner_id}"),
    ("PATCH", "/v1/admin/partners/{partner_id}"),
    ("PUT", "/v1/admin/partners/{partner_id}/subscriptions/{subscription_id}"),
    ("POST", "/v1/survivors"),
    ("POST", "/v1/admin/credentials"),  # the issued key's credential: role, subject, agency
    ("POST", "/v1/survivors/{survivor_id}/consents"),
    ("PUT", "/v1/survivors/{survivor_id}/consents/{consent_id}"),
    ("POST", "/v1/survivors/{survivor_id}/consents/fhir"),
    ("POST", "/v1/survivors/{survivor_id}/declarations"),
    ("PUT", "/v1/survivors/{survivor_id}/contact-preference"),  # the code word, as recorded
    ("POST", "/v1/survivors/{survivor_id}/court-orders"),
    ("POST", "/v1/referrals"),  # the referral: its event's id and survivor
}


# --- walking the document and the bodies -------------------------------------------------------


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    doc = create_app(Settings()).openapi()
    for template, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method.upper(), template, op


def leaves(value: Any, at: Leaf = ()) -> Iterator[Leaf]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*at, k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from leaves(v, (*at, i))
    else:
        yield at


def replaced(body: Any, leaf: Leaf, canary: str) -> Any:
    out = copy.deepcopy(body)
    if not leaf:
        return canary
    holder = out
    for part in leaf[:-1]:
        holder = holder[part]
    holder[leaf[-1]] = canary
    return out


def schema_fields(doc: dict[str, Any], schema: dict[str, Any], at: str = "") -> Iterator[str]:
    """Dotted paths of the fields a request body schema declares (lists as ``[]``)."""
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            yield from schema_fields(doc, option, at)
            return
    if schema.get("type") == "object" and "properties" in schema:
        for name, sub in schema["properties"].items():
            yield from schema_fields(doc, sub, f"{at}.{name}" if at else name)
    elif schema.get("type") == "array":
        yield from schema_fields(doc, schema.get("items", {}), f"{at}.[]")
    else:
        yield at


def dotted(leaf: Leaf) -> str:
    return ".".join("[]" if isinstance(p, int) else str(p) for p in leaf)


def test_the_valid_bodies_give_every_field_of_every_body() -> None:
    """A field added to a request schema must get a valid value here, or no canary goes in."""
    doc = create_app(Settings()).openapi()
    t = Target("", Path(), {}, "sv-x", "c-x")
    given = bodies(t)
    missing = []
    for method, template, op in operations():
        for content in op.get("requestBody", {}).get("content", {}).values():
            variants = given.get((method, template))
            assert variants, f"no valid body for {method} {template}"
            have = {dotted(leaf) for body in variants for leaf in leaves(body)}
            for name in schema_fields(doc, content.get("schema", {})):
                if not any(h == name or h.startswith(f"{name}.") or not name for h in have):
                    missing.append(f"{method} {template}: {name}")
        for p in op.get("parameters", []):
            known = path_values(t) if p["in"] == "path" else QUERY
            if p["name"] not in known:
                missing.append(f"{method} {template}: {p['in']} parameter {p['name']}")
    assert not missing, "\n".join(missing)


# --- the requests -----------------------------------------------------------------------------


def requests(t: Target) -> Iterator[tuple[Request, str]]:
    """Each valid request, then the same with one field holding the marker ``{canary}``;
    yields (request, what it is, for messages)."""
    given = bodies(t)
    for method, template, op in operations():
        params = op.get("parameters", [])
        path = {p["name"]: path_values(t)[p["name"]] for p in params if p["in"] == "path"}
        query = {p["name"]: QUERY[p["name"]] for p in params if p["in"] == "query"}
        content = next(iter(op.get("requestBody", {}).get("content", {})), None)
        variants = given[(method, template)] if content else [None]
        for body in variants:
            base = Request(method, template, path, query, body, content or "application/json")
            yield base, "valid"
            for name in path:
                yield (
                    Request(
                        method, template, {**path, name: "{canary}"}, query, body, base.content_type
                    ),
                    name,
                )
            for name in query:
                yield (
                    Request(
                        method, template, path, {**query, name: "{canary}"}, body, base.content_type
                    ),
                    name,
                )
            for leaf in leaves(body) if body is not None else ():
                changed = replaced(body, leaf, "{canary}")
                yield (
                    Request(method, template, path, query, changed, base.content_type),
                    f"body {dotted(leaf) or '(whole)'}",
                )


def _fill(value: Any, canary: str) -> Any:
    if value == "{canary}":
        return canary
    if isinstance(value, dict):
        return {k: _fill(v, canary) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, canary) for v in value]
    return value


def _prepared(r: Request, canary: str) -> tuple[str, dict[str, Any], bytes | None]:
    url = r.template.format(**{k: _fill(v, canary) for k, v in r.path.items()})
    query = {k: v for k, v in ((k, _fill(v, canary)) for k, v in r.query.items()) if v is not None}
    body = _fill(r.body, canary)
    if (r.method, r.template) == ("POST", "/v1/events") and body[provenance.SIGNATURE] != canary:
        # An agency signs what it sends: sign again around the canary, so that the request
        # reaches the checks after the signature's.
        unsigned = {k: v for k, v in body.items() if k != provenance.SIGNATURE}
        body = provenance.sign_event(unsigned, AGENCY_KEYS["harbor-outreach"])
    if (r.method, r.template) == ("POST", "/v1/referrals") and isinstance(body.get("event"), dict):
        event = body["event"]
        if event.get(provenance.SIGNATURE) != canary:  # the referral's payload, signed again
            unsigned = {k: v for k, v in event.items() if k != provenance.SIGNATURE}
            body = {
                **body,
                "event": provenance.sign_event(unsigned, AGENCY_KEYS["harbor-outreach"]),
            }
    return url, query, None if body is None else json.dumps(body).encode()


async def test_no_canary_in_any_error_answer_nor_in_the_api_log(target: Target) -> None:
    wrong: list[str] = []
    valid_refused: list[str] = []
    calls = 0
    n = 0
    async with httpx.AsyncClient(base_url=target.base, timeout=60) as http:
        for r, what in requests(target):
            admitted = {c for c, cell in expected(r.method, r.template).items() if cell == "ok"}
            for role in COLUMNS:
                kinds = ["valid"] if what == "valid" else ["text", "id"]
                for kind in kinds:
                    n += 1
                    mark = f"{TOKEN}x{n}z"
                    canary = (
                        f"Jane Doe 555-0100 at 12 Hidden Lane {mark}"
                        if kind == "text"
                        else f"jd{mark}"
                    )
                    url, query, content = _prepared(r, canary)
                    headers = {**_bearer(target.keys[role]), "Content-Type": r.content_type}
                    if r.template == "/v1/credentials/rotate":
                        continue  # no field to carry a canary, and it would spend the key
                    answer = await http.request(
                        r.method, url, params=query, content=content, headers=headers
                    )
                    calls += 1
                    where = (
                        f"{r.method} {r.template} [{what}, {kind}] as {role}: {answer.status_code}"
                    )
                    if what == "valid":
                        if role in admitted and _invalid_request(answer):
                            valid_refused.append(f"{where} {answer.text[:300]}")
                        continue
                    if mark not in answer.text:
                        continue
                    stored = (r.method, r.template) in STORES or what in r.path
                    if not (answer.is_success and stored):
                        wrong.append(f"{where} {answer.text[:300]}")
    assert not valid_refused, "valid requests refused by validation:\n" + "\n".join(valid_refused)
    assert not wrong, "answers repeating what was sent:\n" + "\n".join(wrong)
    lines = target.log.read_text().splitlines()
    leaked = [line[:300] for line in lines if TOKEN in line]
    assert not leaked, "API log lines with a canary:\n" + "\n".join(leaked)
    # Not vacuous: thousands of requests, and the log really logged them.
    assert calls > 2000
    assert sum('"route"' in line for line in lines) >= calls


def _invalid_request(answer: httpx.Response) -> bool:
    """Refused by request validation (the handler never ran): a 422 listing locations."""
    if answer.status_code != 422:
        return False
    detail = answer.json().get("detail")
    return isinstance(detail, list) and all(isinstance(d, dict) and "loc" in d for d in detail)


async def test_a_key_the_client_chose_is_not_repeated_in_a_validation_error(
    target: Target,
) -> None:
    """Keys are sent content too: an unexpected one is located as ``(key)``."""
    odd = f"Jane Doe 555-0100 {TOKEN}"
    body = {**CONSENT, odd: "x", "evidence": {**CONSENT["evidence"], odd: 1}}
    async with httpx.AsyncClient(base_url=target.base, timeout=60) as http:
        answer = await http.post(
            f"/v1/survivors/{target.survivor}/consents",
            json=body,
            headers=_bearer(target.keys["advocate"]),
        )
    assert answer.status_code == 422
    locations = [e["loc"] for e in answer.json()["detail"]]
    assert ["body", "(key)"] in locations and ["body", "evidence", "(key)"] in locations
    assert TOKEN not in answer.text
