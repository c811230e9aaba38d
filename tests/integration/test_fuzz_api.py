"""schemathesis against the API's own OpenAPI document, with a valid key of every role.

Over every operation × every role (and no key), with valid and invalid requests:

- no response is a 5xx;
- every response conforms to the document: its status code is documented, its content type
  and its body match what the document says for that code (schemathesis's own checks);
- no response carries data the caller may not see: canary values are planted in one
  survivor's ("the victim's") consent evidence and guardian record, and every fuzzing
  principal belongs to someone else (another survivor and their guardian, another agency's
  advocate, agency and supervisor, a partner, compliance, an admin). Operations about a
  survivor are also called with the victim's id and consent id.

The fuzzed API runs on a database, topics and consumer groups of its own (no relay reads
them), so whatever the admin fuzzing writes to the registry never reaches the rest of the
test session. Every operation × role is called at least with each example the document
gives, one valid and one invalid request, however long that takes; then up to
``ACCORD_FUZZ_EXAMPLES`` more per operation and role (default 8) while
``ACCORD_FUZZ_BUDGET_S`` seconds last (default 150). The test reports how much it ran.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import transaction
from services.runtime import running_api
from services.settings import Settings
from tests.support.stack import kafka_ready, private_api

pytestmark = [
    pytest.mark.integration,
    # schemathesis's own strategies use `random`; not ours to fix.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

EXAMPLES = int(os.environ.get("ACCORD_FUZZ_EXAMPLES", "8"))
BUDGET_S = float(os.environ.get("ACCORD_FUZZ_BUDGET_S", "150"))
CANARY = f"CANARY{uuid.uuid4().hex}"
CANARY_RELATION = f"CANREL{uuid.uuid4().hex[:20]}"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Target:
    base: str
    victim: str
    victim_consent: str
    keys: dict[str, str | None]


def _bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="module")
async def target(settings: Settings) -> AsyncIterator[Target]:
    s, sessions = private_api(settings, "fuzz")
    with transaction(sessions) as session:

        def key(role: Role, subject: str, agency: str | None = None) -> str:
            return issue_credential(session=session, role=role, subject=subject, agency_id=agency)

        victim_advocate = key(Role.ADVOCATE, "adv-fuzz-harbor", "harbor-outreach")
        keys: dict[str, str | None] = {
            "anon": None,
            "agency": key(Role.AGENCY, "valley-school"),
            "partner": key(Role.PARTNER, "northside-clinic"),
            "advocate": key(Role.ADVOCATE, "adv-fuzz-valley", "valley-school"),
            "supervisor": key(Role.SUPERVISOR, "sup-fuzz-valley", "valley-school"),
            "compliance": key(Role.COMPLIANCE, "cmp-fuzz"),
            "admin": key(Role.ADMIN, "admin-fuzz"),
        }
    await kafka_ready(s)
    async with running_api(s) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        victim = f"sv-victim-{uuid.uuid4().hex[:8]}"
        other = f"sv-other-{uuid.uuid4().hex[:8]}"
        adv_h, adv_v = _bearer(victim_advocate), _bearer(keys["advocate"])
        for sv, headers in ((victim, adv_h), (other, adv_v)):
            r = await http.post("/v1/survivors", json={"survivor_id": sv}, headers=headers)
            assert r.status_code == 201, r.text
        guardian = {"guardian_id": "gd-fuzz-victim", "relation": CANARY_RELATION}
        r = await http.put(f"/v1/survivors/{victim}/guardians", json=guardian, headers=adv_h)
        assert r.status_code == 204, r.text
        r = await http.put(
            f"/v1/survivors/{other}/guardians",
            json={"guardian_id": "gd-fuzz-other", "relation": "parent"},
            headers=adv_v,
        )
        assert r.status_code == 204, r.text
        consent = {
            "provisions": [
                {
                    "type": "permit",
                    "recipients": {"partners": [], "partner_types": ["shelter"]},
                    "purposes": ["service_referral"],
                    "categories": ["contact"],
                    "period": {"start": "2026-01-01T00:00:00Z", "end": None},
                }
            ],
            "evidence": {"kind": "form_reference", "reference": CANARY},
        }
        r = await http.post(f"/v1/survivors/{victim}/consents", json=consent, headers=adv_h)
        assert r.status_code == 201, r.text
        victim_consent = r.json()["id"]
        r = await http.post(f"/v1/survivors/{other}/consents", json=consent, headers=adv_v)
        assert r.status_code == 201
        # The other survivor's own key and their guardian's.
        with transaction(sessions) as session:
            keys["survivor"] = issue_credential(session=session, role=Role.SURVIVOR, subject=other)
            keys["guardian"] = issue_credential(
                session=session, role=Role.GUARDIAN, subject="gd-fuzz-other"
            )
        # The canaries really are readable by those who may see them.
        seen = await http.get(f"/v1/survivors/{victim}/consents", headers=adv_h)
        assert CANARY in seen.text
        yield Target(base, victim, victim_consent, keys)


@dataclass
class Tally:
    calls: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    nonconforming: dict[str, str] = field(default_factory=dict)
    covered: int = 0  # calls of the first sweep (every operation × role)
    skipped: list[str] = field(default_factory=list)


def _check(t: Target, tally: Tally, role: str, case: Any, label: str) -> None:
    response = case.call(base_url=t.base, headers=_bearer(t.keys[role]), timeout=30)
    tally.calls += 1
    code = response.status_code
    tally.by_status[code] = tally.by_status.get(code, 0) + 1
    text = response.content.decode("utf-8", "replace")
    where = f"{case.method} {case.formatted_path} as {role}{label}"
    if code == 200 and case.path == "/v1/credentials/rotate":
        t.keys[role] = response.json()["api_key"]  # the old one is revoked now
    if code >= 500:
        sent = f"query={case.query} body={str(case.body)[:200]}"
        tally.failures.append(f"{where}: {code} {text[:200]} ({sent})")
    for canary in (CANARY, CANARY_RELATION):
        if canary in text:
            tally.failures.append(f"{where}: the victim's data in the response")
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        for failure in group.exceptions:
            # One line per operation, check and status; one example of each.
            kind = f"{case.method} {case.path}: {failure.title} ({code})"
            tally.nonconforming.setdefault(kind, f"as {role}: {text[:160]}")


def _run(
    t: Target, tally: Tally, role: str, cases: Any, examples: int, deadline: float | None
) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, victim=st.booleans())
    def run(case: Any, victim: bool) -> None:
        if deadline is not None and time.monotonic() > deadline:
            return
        if victim and "survivor_id" in (case.path_parameters or {}):
            # The same request aimed at the victim's own records.
            case.path_parameters["survivor_id"] = t.victim
            if "consent_id" in case.path_parameters:
                case.path_parameters["consent_id"] = t.victim_consent
            _check(t, tally, role, case, " (victim's id)")
        else:
            _check(t, tally, role, case, "")

    run()


def _fuzz(t: Target, doc: dict[str, Any], deadline: float) -> Tally:
    """Runs in a worker thread: the API serves on the test's event loop meanwhile.

    First every operation × role, whatever the time it takes on a loaded machine: each
    example the document gives, a valid request and an invalid one. Then, until the budget is
    spent, ``EXAMPLES`` more of each (schemathesis's positive and negative modes alike)."""
    schema = schemathesis.openapi.from_dict(doc)
    tally = Tally()
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the document itself is broken: nothing to fuzz
        operations.append(result.ok())
    for op in operations:
        documented = op.get_strategies_from_examples()
        for role in list(t.keys):
            for example in documented:
                _run(t, tally, role, example, 1, None)
            _run(t, tally, role, op.as_strategy(), 1, None)
            _run(t, tally, role, op.as_strategy(GenerationMode.NEGATIVE), 1, None)
    tally.covered = tally.calls
    for op in operations:
        cases = st.one_of(op.as_strategy(), op.as_strategy(GenerationMode.NEGATIVE))
        for role in list(t.keys):
            if time.monotonic() > deadline:
                tally.skipped.append(f"{op.method.upper()} {op.path} as {role}")
                continue
            _run(t, tally, role, cases, EXAMPLES, deadline)
    return tally


async def test_fuzz_every_operation_as_every_role(target: Target) -> None:
    async with httpx.AsyncClient(base_url=target.base, timeout=30) as http:
        doc = (await http.get("/openapi.json")).json()
    deadline = time.monotonic() + BUDGET_S
    tally = await asyncio.to_thread(_fuzz, target, doc, deadline)
    summary = (
        f"{tally.calls} calls ({tally.covered} covering every operation × role once), statuses "
        f"{dict(sorted(tally.by_status.items()))}, {len(tally.skipped)} operation×role pairs "
        "not fuzzed further for lack of time"
    )
    print(summary)
    roles = len(target.keys)
    assert tally.covered >= 2 * roles * sum(len(item) for item in doc["paths"].values())
    assert not tally.failures, summary + "\n" + "\n".join(sorted(set(tally.failures))[:50])
    nonconforming = [f"{kind} {example}" for kind, example in sorted(tally.nonconforming.items())]
    listing = "\n".join(nonconforming[:80])
    assert not nonconforming, f"{summary}; {len(nonconforming)} off the document:\n{listing}"


async def test_what_the_fuzzing_found_is_422_not_500(target: Target) -> None:
    """Each was a 500 (numbers past the database's integer range, NUL characters) or a 200
    (date-times that are not RFC 3339) before."""
    k = target.keys
    calls: list[tuple[str, str, str | None, dict[str, Any] | None, dict[str, Any] | None]] = [
        ("GET", "/v1/events/rejected", k["agency"], {"after": 2**63}, None),
        ("GET", "/v1/audit/decisions", k["compliance"], {"after": 2**64}, None),
        ("GET", "/v1/audit/reviews", k["compliance"], {"after": 2**64}, None),
        # Read as a Unix time, and as midnight of an unstated zone, before.
        ("GET", "/v1/audit/decisions", k["compliance"], {"to": "0.5"}, None),
        ("GET", "/v1/audit/reports/consents", k["compliance"], {"from": "2026-01-01"}, None),
        ("POST", f"/v1/audit/reviews/{2**64}", k["compliance"], None, None),
        ("POST", "/v1/audit/reviews/-5", k["compliance"], None, None),
        ("POST", "/v1/enroll", None, None, {"code": "ab\x00-cd"}),
        (
            "POST",
            f"/v1/survivors/{target.victim}/declarations",
            k["supervisor"],
            None,
            {"justification": "threat\x00", "tell_survivor": False},
        ),
        ("GET", f"/v1/survivors/{'sv-x%00y'}/consents", k["survivor"], None, None),
    ]
    async with httpx.AsyncClient(base_url=target.base, timeout=30) as http:
        for method, path, key, params, body in calls:
            r = await http.request(method, path, params=params, json=body, headers=_bearer(key))
            assert r.status_code < 500, (method, path, r.status_code, r.text)
            assert r.status_code in (403, 404, 422), (method, path, r.status_code, r.text)
