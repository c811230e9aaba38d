"""docs/quickstart.md, run as written: every ```sh block, in order, in one bash (``-euo
pipefail``) from the repository's root, on the real stack; then the delivery ``accord tail``
printed must be the one the page shows (same fields and values). A change to a command, an
endpoint or the policy that breaks the page fails here.

The page runs as a newcomer would run it; only the names are the session's own (topics,
groups, the database, the API's port), through ``ACCORD_*`` variables, so it can run beside
the other tests and on a stack that ran the demo or the quickstart before.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import make_engine, make_sessionmaker, transaction
from services.devstack import postgres
from services.settings import REPO_ROOT, Settings
from tests.support.stack import free_port, run_tag

pytestmark = pytest.mark.integration

PAGE = REPO_ROOT / "docs" / "quickstart.md"
BLOCK = re.compile(r"^```(\S*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
TIMEOUT_S = 600  # set-up, two processes started, one event relayed; generous for a busy box


def blocks(kind: str) -> list[str]:
    return [body for info, body in BLOCK.findall(PAGE.read_text()) if info == kind]


def test_the_page_has_what_the_test_relies_on() -> None:
    script = "\n".join(blocks("sh"))
    for needed in ("accord credentials issue", "accord publish", "accord tail", "--max 1"):
        assert needed in script
    assert len(blocks("json")) == 1, "one ```json block: the delivery accord tail prints"


def _env(settings: Settings, tmp: Path) -> dict[str, str]:
    tag = f"{run_tag(settings)}.qs"  # under the session's tag: its ACLs are cleaned up with it
    # Beside the session's own test database (sessions side by side each name theirs).
    database = os.environ.get("ACCORD_TEST_DATABASE", "accord_test") + "_quickstart"
    postgres.ensure_database(settings, database)
    url = postgres.url(settings, database)
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        c.execute("DROP SCHEMA public CASCADE")
        c.execute("CREATE SCHEMA public")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update(
        {
            "ACCORD_KAFKA_PORT": str(settings.kafka_port),
            "ACCORD_KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port),
            "ACCORD_OPA_PORT": str(settings.opa_port),
            "ACCORD_POSTGRES_PORT": str(settings.postgres_port),
            "ACCORD_STATE_DIR": str(settings.state_dir),
            "ACCORD_CACHE_DIR": str(settings.cache_dir),
            "ACCORD_API_PORT": str(free_port()),
            "ACCORD_RELAY_HEALTH_PORT": str(free_port()),  # not 9101: other relays may hold it
            "ACCORD_SINK_HEALTH_PORT": str(free_port()),
            "ACCORD_AUDIT_CHECKPOINTER_HEALTH_PORT": str(free_port()),  # nor 9103
            "ACCORD_DATABASE_URL": url,
            "ACCORD_TOPIC_INBOUND": f"{tag}.inbound",
            "ACCORD_TOPIC_DECISIONS": f"{tag}.decisions",
            "ACCORD_TOPIC_DEADLETTER": f"{tag}.deadletter",
            "ACCORD_TOPIC_CONSENTS": f"{tag}.consents",
            "ACCORD_TOPIC_SEEN": f"{tag}.seen",
            "ACCORD_PARTNER_TOPIC_PREFIX": f"{tag}.partner.",
            "ACCORD_RELAY_GROUP": f"{tag}-relay",
            "ACCORD_RELAY_TRANSACTIONAL_ID": f"{tag}-relay-0",
            "ACCORD_TOPIC_AUDIT_CHECKPOINTS": f"{tag}.audit.checkpoints",
            "ACCORD_AUDIT_CHECKPOINTER_TRANSACTIONAL_ID": f"{tag}-checkpointer",
            "ACCORD_AUDIT_WITNESS_FILE": str(tmp / "checkpoints.jsonl"),
            "TMPDIR": str(tmp),  # the page's mktemp -d: its logs are ours to show on failure
        }
    )
    return env


def _logs(tmp: Path) -> str:
    return "\n".join(
        f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-30:])
        for log in sorted(tmp.glob("*/*.log"))
    )


def _run(script: str, env: dict[str, str], tmp: Path) -> str:
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: what it started in the background too
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the quickstart did not finish in {TIMEOUT_S} s:\n{out}\n{_logs(tmp)}")
    finally:
        try:  # the API and relay, if a command failed before the page stops them
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"the quickstart failed:\n{out}\n{_logs(tmp)}"
    return out


def _deliveries(out: str) -> list[dict[str, Any]]:
    found = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "delivery_id" in doc:
                found.append(doc)
    return found


def test_the_quickstart_runs_as_written(settings: Settings, tmp_path: Path) -> None:
    out = _run("\n".join(blocks("sh")), _env(settings, tmp_path), tmp_path)
    got = _deliveries(out)
    assert len(got) == 1, out
    delivery = got[0]
    shown = json.loads(blocks("json")[0])
    assert delivery.keys() == shown.keys()
    for name in ("type", "subject", "purpose", "fields", "sealed"):
        assert delivery[name] == shown[name], name
    assert delivery["delivery_id"] == f"{delivery['event_id']}/harbour-house"
    # Withheld by the rules the page names: an unnamed sensitive category (R10), R7.
    assert "hiv_status" not in delivery["fields"]
    assert "shelter_address" not in delivery["fields"]


async def test_the_readme_consent_example_is_accepted(api: str, database: str) -> None:
    """The consent body the README shows is one the API grants as written."""
    readme = (REPO_ROOT / "README.md").read_text()
    [body] = [json.loads(b) for i, b in BLOCK.findall(readme) if i == "json" and "provisions" in b]
    with transaction(make_sessionmaker(make_engine(database))) as session:
        advocate = issue_credential(
            session=session, role=Role.ADVOCATE, subject="adv-readme", agency_id="harbor-outreach"
        )
    survivor = f"sv-readme-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {advocate}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60) as http:
        r = await http.post("/v1/survivors", json={"survivor_id": survivor})
        assert r.status_code == 201, r.text
        r = await http.post(f"/v1/survivors/{survivor}/consents", json=body)
    assert r.status_code == 201, r.text
    got = r.json()["provisions"]
    # As written, but an open-ended permit is capped at the jurisdiction's maximum duration
    # (time-limited consent, docs/safe-contact.md): never more than 366 days from now.
    latest = datetime.now(UTC) + timedelta(days=366)
    for sent, granted in zip(body["provisions"], got, strict=True):
        end = granted["period"].pop("end")
        assert {**sent, "period": {k: v for k, v in sent["period"].items() if k != "end"}} == {
            **granted
        }
        if sent["period"].get("end") is None and sent["type"] == "permit":
            assert end is not None
            assert datetime.fromisoformat(end.replace("Z", "+00:00")) <= latest
        else:
            assert end == sent["period"].get("end")
