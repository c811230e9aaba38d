"""`accord demo` on a fresh stack prints no error and no warning.

A healthy first run printed ``GroupCoordinatorNotAvailableError`` (the first consumer group on
a new broker, whose ``__consumer_offsets`` did not exist yet) and could print ``Unclosed
AIOKafkaProducer``. This runs the demo as a newcomer does, on a stack of its own: a fresh
state dir (new PostgreSQL cluster, OPA, a newly formatted Kafka) on free ports, then stops it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.bench.harness import free_ports

pytestmark = pytest.mark.integration

ACCORD = str(Path(sys.executable).with_name("accord"))
# An ERROR log line, an exception's or a warning's name, an asyncio "Unclosed ..." report.
TROUBLE = re.compile(r"\bERROR\b|\w(Error|Exception|Warning)\b|Unclosed|Traceback|\berror:")


@pytest.fixture
def fresh_env() -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="accord-demo-"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres account when we are root
    kafka, controller, opa, pg, api = free_ports(5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update(
        ACCORD_STATE_DIR=str(root / "state"),
        ACCORD_KAFKA_PORT=str(kafka),
        ACCORD_KAFKA_CONTROLLER_PORT=str(controller),
        ACCORD_OPA_PORT=str(opa),
        ACCORD_POSTGRES_PORT=str(pg),
        ACCORD_API_PORT=str(api),
    )
    try:
        yield env
    finally:
        subprocess.run([ACCORD, "dev", "down"], env=env, capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_a_first_demo_prints_no_error(fresh_env: dict[str, str]) -> None:
    done = subprocess.run(
        [ACCORD, "demo"],
        env=fresh_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "decisions recorded" in output  # the demo ran to its end
    assert "kafka: starting the broker" in output  # on a new broker, not one running already
    trouble = [line for line in output.splitlines() if TROUBLE.search(line)]
    assert not trouble, "\n".join(trouble)
