"""Health, readiness and metrics on the real stack, and logs that are one JSON object a line.

The relay runs as a real ``accord relay`` process on its health port, against a private OPA
that the test stops and starts again; its ``/metrics`` are parsed with prometheus-client's
parser and compared with what the decision topic holds. The API's endpoints are scraped the
same way. ``accord api`` and a crashing ``accord relay`` run as processes whose every output
line must parse as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from services.broker.survivor_keys import seal_all, subject_of
from services.decision_records import split_decisions
from services.observability.metrics import rule_label
from services.runtime import running_api
from services.settings import Settings
from tests.integration.test_crash_recovery import CONSENTS, PARTNER_IDS, Run, run
from tests.support.stack import free_port, opa_server
from tools.bench.harness import publish_steadily, read_all, relay_env, relay_process

pytestmark = pytest.mark.integration
__all__ = ["run"]  # the fixture

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ACCORD = Path(sys.executable).with_name("accord")


async def scrape(base: str) -> tuple[Samples, str]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, response.text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every label set that includes ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def ready(base: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base}/readyz")
    return response.status_code, response.json()


async def eventually(
    probe: Callable[[], Awaitable[bool]], *, timeout_s: float = 60, what: str
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await probe():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


async def test_relay_metrics_count_what_it_relayed_and_readyz_follows_opa(
    run: Run,
    database: str,
    producer: AIOKafkaProducer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opa_port, health_port = free_port(), free_port()
    s = run.settings.model_copy(update={"opa_url": f"http://127.0.0.1:{opa_port}"})
    base = f"http://127.0.0.1:{health_port}"
    monkeypatch.setenv("ACCORD_RELAY_HEALTH_PORT", str(health_port))  # relay_env copies it
    log = tmp_path / "relay.log"
    events, late = run.events[:40], run.events[40:41]
    first_opa = ExitStack()
    first_opa.enter_context(opa_server(s, opa_port, tmp_path))
    try:
        async with relay_process(s, log) as relay:

            async def is_ready() -> bool:
                assert relay.alive(), log.read_text()[-3000:]
                try:
                    return (await ready(base))[0] == 200
                except httpx.TransportError:
                    return False  # not listening yet

            await eventually(is_ready, what="the relay's /readyz")
            async with httpx.AsyncClient(timeout=10) as client:
                alive = await client.get(f"{base}/healthz")
            assert alive.status_code == 200 and alive.json() == {"status": "ok"}
            assert (await ready(base))[1] == {
                "ready": True,
                "checks": {
                    "kafka": True,
                    "database": True,
                    "opa": True,
                    "partitions_assigned": True,
                    "not_holding": True,
                },
            }
            before, _ = await scrape(base)

            # Forty events, and one record that is not sealed to its survivor: a dead letter.
            await producer.send_and_wait(s.topic_inbound, b'{"not": "sealed"}', key=b"x")
            await publish_steadily(s, producer, events, per_tick=10)
            decisions = await decisions_of(s, len(events))

            async def counted() -> bool:
                now, _ = await scrape(base)
                return value(now, "accord_relay_events_total", result="relayed") >= len(events)

            await eventually(counted, what="the relay's counters")
            after, text = await scrape(base)

            def delta(name: str, **labels: str) -> float:
                return value(after, name, **labels) - value(before, name, **labels)

            assert delta("accord_relay_events_total", result="relayed") == len(events)
            assert delta("accord_relay_events_total", result="rejected") == 1
            assert delta("accord_relay_dead_letters_total", code="unsealed") == 1
            by_outcome = Counter((d["outcome"], d["partner_type"]) for d in decisions)
            assert {o for o, _ in by_outcome} >= {"deny", "partial"}, by_outcome
            for (outcome, ptype), n in by_outcome.items():
                got = delta("accord_relay_decisions_total", outcome=outcome, partner_type=ptype)
                assert got == n, (outcome, ptype)
            released = Counter(d["partner_type"] for d in decisions if d["outcome"] != "deny")
            for ptype, n in released.items():
                assert delta("accord_relay_deliveries_total", partner_type=ptype) == n, ptype
            assert total(after, "accord_relay_deliveries_total") - total(
                before, "accord_relay_deliveries_total"
            ) == sum(released.values())
            rules: Counter[tuple[str, str]] = Counter()
            for d in decisions:
                named = {*d["reasons"], *(r for w in d["withheld"] for r in w["rules"])}
                for rule in {rule_label(r) for r in named}:
                    rules[(d["outcome"], rule)] += 1
            for (outcome, rule), n in rules.items():
                got = delta("accord_relay_decision_rules_total", outcome=outcome, rule=rule)
                assert got == n, (outcome, rule)
            assert value(after, "accord_opa_request_seconds_count", result="ok") > 0
            for stage in ("registry", "views", "unseal", "validate", "decide", "seal", "commit"):
                assert value(after, "accord_relay_stage_seconds_count", stage=stage) > 0, stage
            assert value(after, "accord_relay_assigned_partitions") == s.inbound_partitions
            assert value(after, "accord_relay_holding") == 0
            lags = {k: v for k, v in after.items() if k[0] == "accord_relay_consumer_lag"}
            assert len(lags) == s.inbound_partitions and sum(lags.values()) == 0, lags
            # Bounded labels only: no survivor id, event id, agency id or field name.
            assert not any(f'"{survivor}"' in text for survivor in CONSENTS)
            assert not any(d["event_id"] in text for d in decisions)
            assert "survivor_name" not in text and "harbor-outreach" not in text

            # OPA stops: not ready; an event that arrives now is held, not delivered.
            first_opa.close()
            sealed = seal_all(s, late)[0]
            await producer.send_and_wait(s.topic_inbound, sealed, key=subject_of(sealed))

            async def held() -> bool:
                status, body = await ready(base)
                return status == 503 and body["checks"]["not_holding"] is False

            await eventually(held, what="/readyz to report the held batch")
            body = (await ready(base))[1]
            assert body["ready"] is False
            assert body["checks"] == {
                "kafka": True,
                "database": True,
                "opa": False,
                "partitions_assigned": True,
                "not_holding": False,
            }
            down, _ = await scrape(base)
            assert value(down, "accord_relay_holding") == 1
            assert value(down, "accord_relay_held_batches_total", cause="opa_unavailable") > 0
            assert value(down, "accord_opa_request_seconds_count", result="unavailable") > 0
            assert value(down, "accord_relay_events_total", result="relayed") == len(events)
            assert total(down, "accord_relay_consumer_lag") == 1  # the held event

            # OPA back (same port): ready again, and the held event is relayed.
            with opa_server(s, opa_port, tmp_path):
                await eventually(is_ready, what="/readyz after OPA is back")
                assert len(await decisions_of(s, len(events) + 1)) == (len(events) + 1) * len(
                    PARTNER_IDS
                )
                back, _ = await scrape(base)
                assert value(back, "accord_relay_events_total", result="relayed") == len(events) + 1
                assert value(back, "accord_relay_holding") == 0
    finally:
        first_opa.close()
    text = log.read_text()
    assert text and all(isinstance(json.loads(line), dict) for line in text.splitlines())
    assert "\x1b" not in text
    assert '"health port listening"' in text


async def decisions_of(s: Settings, events: int) -> list[dict[str, Any]]:
    want = events * len(PARTNER_IDS)
    raw = await read_all(s, s.topic_decisions, until=events, timeout_s=90)  # one per event
    records = [d for v in raw for d in split_decisions(json.loads(v))]
    assert len(records) == want
    return records


async def test_api_health_is_public_and_metrics_count_authentication_failures(api: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        alive = await client.get(f"{api}/healthz")
        assert alive.status_code == 200 and alive.json() == {"status": "ok"}
        assert alive.headers["x-content-type-options"] == "nosniff"
        status, body = await ready(api)
        assert (status, body) == (200, {"ready": True, "checks": READY})
        before, _ = await scrape(api)
        for n in range(3):
            bad = {"Authorization": f"Bearer acc_nosuchkey{n}_secret"}
            assert (await client.get(f"{api}/v1/admin/agencies", headers=bad)).status_code == 401
        # Probes and scrapes neither need a key nor count as failures.
        assert (await client.get(f"{api}/readyz")).status_code == 200
        after, text = await scrape(api)
    failures = "accord_api_auth_failures_total"
    assert value(after, failures) - value(before, failures) == 3
    assert "nosuchkey" not in text


READY = {"kafka": True, "database": True, "opa": True}


async def test_api_readyz_follows_opa_and_probes_pass_a_rate_limited_address(
    settings: Settings, database: str, kafka_topics: list[str], tmp_path: Path
) -> None:
    opa_port = free_port()
    s = settings.model_copy(
        update={
            "opa_url": f"http://127.0.0.1:{opa_port}",
            "api_port": free_port(),
            "auth_failures_per_minute": 2,
        }
    )
    first_opa = ExitStack()
    first_opa.enter_context(opa_server(s, opa_port, tmp_path))
    try:
        async with running_api(s) as base, httpx.AsyncClient(timeout=10) as client:
            assert await ready(base) == (200, {"ready": True, "checks": READY})
            first_opa.close()
            status, body = await ready(base)
            assert (status, body) == (503, {"ready": False, "checks": {**READY, "opa": False}})
            with opa_server(s, opa_port, tmp_path):
                assert await ready(base) == (200, {"ready": True, "checks": READY})

                # This address exhausts its authentication failures: the API refuses it
                # 429, but probes and scrapes from it still answer.
                before, _ = await scrape(base)
                bad = {"Authorization": "Bearer acc_nosuchkey_secret"}
                codes = [
                    (await client.get(f"{base}/v1/admin/agencies", headers=bad)).status_code
                    for _ in range(4)
                ]
                assert codes[:2] == [401, 401] and codes[-1] == 429, codes
                assert (await ready(base))[0] == 200
                assert (await client.get(f"{base}/healthz")).status_code == 200
                after, _ = await scrape(base)
                limited = "accord_api_rate_limited_total"
                assert value(after, limited) - value(before, limited) == codes.count(429)
    finally:
        first_opa.close()


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (fails on the first that is not one)."""
    assert "\x1b" not in text, "an ANSI escape code in the output"
    docs = []
    for line in text.splitlines():
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        docs.append(doc)
    return docs


async def test_accord_api_process_writes_only_json_lines(
    settings: Settings, database: str, kafka_topics: list[str], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **relay_env(settings),
        "ACCORD_API_PORT": str(port),
        "ACCORD_AUDIT_VERIFY_KEY": settings.audit_verify_key,  # verify only: no signing key
    }
    out, err = tmp_path / "api.out", tmp_path / "api.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            str(ACCORD), "api", env=env, stdout=stdout, stderr=stderr
        )
    base = f"http://127.0.0.1:{port}"
    try:

        async def up() -> bool:
            assert proc.returncode is None, err.read_text()[-3000:]
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    return (await client.get(f"{base}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(up, what="accord api")
        async with httpx.AsyncClient(timeout=10) as client:
            await client.get(f"{base}/readyz")
            await client.get(f"{base}/metrics")
            await client.get(f"{base}/v1/admin/agencies")  # 401
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await proc.wait()
    logs = json_lines(out.read_text() + err.read_text())
    messages = [d["msg"] for d in logs]
    assert any(m.startswith("Started server process") for m in messages), messages
    # The access line names the route template and the status, never the path or query sent.
    access = [(d.get("route"), d.get("status")) for d in logs if d["msg"] == "request"]
    assert ("/v1/admin/agencies", 401) in access, logs
    assert not any("color_message" in d for d in logs)


def test_a_crash_is_one_json_line_without_the_input(tmp_path: Path) -> None:
    # A setting that does not parse crashes `accord relay` at start: one JSON line naming the
    # setting, not a boxed traceback, and never the value given (it could be a secret).
    env = {**os.environ, "ACCORD_RELAY_MAX_BATCH": "canary-7f3a", "ACCORD_RELAY_HEALTH_PORT": "0"}
    done = subprocess.run(
        [str(ACCORD), "relay"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "canary-7f3a" not in done.stdout + done.stderr
    logs = json_lines(done.stdout + done.stderr)
    crash = next(d for d in logs if d["msg"] == "crashed")
    assert crash["level"] == "critical"
    assert crash["exception"]["type"].endswith("ValidationError")
    assert crash["exception"]["message"].startswith("relay_max_batch:")
    assert any("services/cli.py" in f for f in crash["exception"]["frames"])


def test_a_misconfigured_api_says_so_in_one_json_line() -> None:
    env = {**os.environ, "ACCORD_API_TLS_CERT": "/nonexistent/cert.pem", "ACCORD_API_TLS_KEY": ""}
    done = subprocess.run([str(ACCORD), "api"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    (line,) = json_lines(done.stdout + done.stderr)
    assert line["level"] == "error" and "ACCORD_API_TLS_KEY" in line["msg"]
