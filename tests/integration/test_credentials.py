"""Keys without code: ``accord credentials`` on the real database and
``POST /v1/admin/credentials`` on the real API.

The CLI is how the first admin key exists; its secret is shown once, printed or written to a
new 0600 file (then not printed). The admin endpoint issues keys for agencies, partners,
advocates, supervisors and compliance staff, only for subjects that exist, and its errors
never echo what was sent.
"""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from services.auth.models import Credential
from services.auth.principals import Principal, Role
from services.auth.service import authenticate, issue_credential
from services.cli import app
from services.db import make_engine, make_sessionmaker, transaction

pytestmark = pytest.mark.integration

CANARY = "Jane Doe at 12 Hidden Lane"


def _cli(database: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["credentials", *args], env={"ACCORD_DATABASE_URL": database})


def _who(database: str, key: str) -> Principal | None:
    with transaction(make_sessionmaker(make_engine(database))) as session:
        return authenticate(session=session, token=key)


def _count(database: str, subject: str) -> int:
    with transaction(make_sessionmaker(make_engine(database))) as session:
        n = session.scalar(select(func.count()).where(Credential.subject == subject))
        return int(n or 0)


def _admin_key(database: str) -> str:
    with transaction(make_sessionmaker(make_engine(database))) as session:
        return issue_credential(session=session, role=Role.ADMIN, subject="admin-credentials")


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_issue_prints_a_working_key_once(database: str) -> None:
    subject = f"ops-{uuid.uuid4().hex[:8]}"
    r = _cli(database, "issue", "--role", "admin", "--subject", subject)
    assert r.exit_code == 0, r.output
    key = r.stdout.strip()
    assert key.startswith("acc_") and "\n" not in key
    assert _who(database, key) == Principal(Role.ADMIN, subject, key.split("_")[1], None)


def test_cli_issue_to_a_file_is_0600_and_not_printed(database: str, tmp_path: Path) -> None:
    subject = f"ops-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "admin.key"
    r = _cli(database, "issue", "--role", "compliance", "--subject", subject, "--out", str(out))
    assert r.exit_code == 0, r.output
    key = out.read_text().strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    secret = key.split("_", 2)[2]
    assert secret not in r.output
    assert key.split("_")[1] in r.output  # the id, to find it in `list`
    principal = _who(database, key)
    assert principal is not None and principal.role is Role.COMPLIANCE
    # An existing file is never overwritten, and nothing is issued.
    again = _cli(database, "issue", "--role", "compliance", "--subject", subject, "--out", str(out))
    assert again.exit_code == 1
    assert out.read_text().strip() == key
    assert _count(database, subject) == 1


def test_cli_refuses_subjects_that_do_not_exist(database: str) -> None:
    cases = [
        ["--role", "agency", "--subject", "no-such-agency"],
        ["--role", "partner", "--subject", "no-such-partner"],
        ["--role", "advocate", "--subject", "adv-x", "--agency", "no-such-agency"],
        ["--role", "supervisor", "--subject", "sup-x"],  # no agency at all
        ["--role", "survivor", "--subject", "sv-x"],  # survivors enroll by code
        ["--role", "admin", "--subject", CANARY],
    ]
    for args in cases:
        r = _cli(database, "issue", *args)
        assert r.exit_code == 1, (args, r.output)
        assert "acc_" not in r.output
        assert CANARY not in r.output
    for subject in ("no-such-agency", "no-such-partner", "adv-x", "sup-x", "sv-x", CANARY):
        assert _count(database, subject) == 0


def test_cli_issues_for_registered_subjects(database: str) -> None:
    r = _cli(database, "issue", "--role", "agency", "--subject", "valley-school")
    assert r.exit_code == 0, r.output
    agency = _who(database, r.stdout.strip())
    assert agency is not None and (agency.role, agency.agency_id) == (Role.AGENCY, "valley-school")
    sub = f"adv-{uuid.uuid4().hex[:8]}"
    r = _cli(database, "issue", "--role", "advocate", "--subject", sub, "--agency", "valley-school")
    assert r.exit_code == 0, r.output
    advocate = _who(database, r.stdout.strip())
    assert advocate is not None and advocate.agency_id == "valley-school"


def test_cli_list_revoke_rotate(database: str) -> None:
    subject = f"cmp-{uuid.uuid4().hex[:8]}"
    first = _cli(database, "issue", "--role", "compliance", "--subject", subject).stdout.strip()
    first_id, first_secret = first.split("_")[1], first.split("_", 2)[2]

    listed = _cli(database, "list", "--subject", subject)
    assert listed.exit_code == 0
    assert first_id in listed.stdout and subject in listed.stdout
    assert first_secret not in listed.stdout

    rotated = _cli(database, "rotate", first_id)
    assert rotated.exit_code == 0, rotated.output
    second = rotated.stdout.strip()
    assert _who(database, first) is None  # the old key fails at once
    again = _who(database, second)
    assert again is not None and (again.role, again.subject) == (Role.COMPLIANCE, subject)
    assert _cli(database, "rotate", first_id).exit_code == 1  # a revoked key does not rotate

    revoked = _cli(database, "revoke", second.split("_")[1])
    assert revoked.exit_code == 0, revoked.output
    assert _who(database, second) is None
    assert _cli(database, "revoke", "00000000000000ff").exit_code == 1
    rows = _cli(database, "list", "--subject", subject).stdout
    assert second.split("_", 2)[2] not in rows
    mine = [line.split() for line in rows.splitlines() if line.endswith(subject)]
    assert len(mine) == 2 and all(cols[4] != "-" for cols in mine)  # both keys, both revoked


# --- the admin API ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "subject", "agency"),
    [
        ("agency", "harbor-outreach", None),
        ("partner", "lighthouse-shelter", None),
        ("advocate", "adv-issued", "harbor-outreach"),
        ("supervisor", "sup-issued", "harbor-outreach"),
        ("compliance", "cmp-issued", None),
    ],
)
async def test_admin_issues_a_key_per_role(
    api: str, database: str, role: str, subject: str, agency: str | None
) -> None:
    admin = _admin_key(database)
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        r = await http.post(
            "/v1/admin/credentials",
            json={"role": role, "subject": subject, "agency_id": agency},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 201, r.text
        got = r.json()
        key = got["api_key"]
        expect_agency = subject if role == "agency" else agency
        assert got["credential"]["id"] == key.split("_")[1]
        assert (got["credential"]["role"], got["credential"]["subject"]) == (role, subject)
        assert got["credential"]["agency_id"] == expect_agency
        key_id = key.split("_")[1]
        assert _who(database, key) == Principal(Role(role), subject, key_id, expect_agency)
        # Listed afterwards, never with its secret.
        listed = await http.get(
            "/v1/admin/credentials",
            params={"subject": subject},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert key.split("_")[1] in listed.text
        assert key.split("_", 2)[2] not in listed.text


async def test_admin_issue_refuses_bad_input_without_echo(api: str, database: str) -> None:
    admin = _admin_key(database)
    bad = [
        ({"role": "agency", "subject": CANARY}, "subject"),
        ({"role": "agency", "subject": "no-such-agency"}, "subject"),
        ({"role": "partner", "subject": "no-such-partner"}, "subject"),
        ({"role": "partner", "subject": "lighthouse-shelter", "agency_id": CANARY}, "agency_id"),
        ({"role": "advocate", "subject": "adv-y"}, "agency_id"),
        ({"role": "supervisor", "subject": "sup-y", "agency_id": "no-such-agency"}, "agency_id"),
        ({"role": "compliance", "subject": "cmp-y", "agency_id": "harbor-outreach"}, "agency_id"),
        ({"role": "admin", "subject": "admin-y"}, "role"),  # admins only from the CLI
        ({"role": "survivor", "subject": "sv-y"}, "role"),  # survivors enroll by code
        ({"role": CANARY, "subject": "x"}, "role"),
    ]
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        for body, field in bad:
            r = await http.post(
                "/v1/admin/credentials", json=body, headers={"Authorization": f"Bearer {admin}"}
            )
            assert r.status_code == 422, (body, r.text)
            assert field in [e["loc"][-1] for e in r.json()["detail"]], (body, r.text)
            assert "acc_" not in r.text
            assert CANARY not in r.text, (body, r.text)
    for subject in (CANARY, "no-such-agency", "adv-y", "sup-y", "cmp-y", "admin-y", "sv-y"):
        assert _count(database, subject) == 0
