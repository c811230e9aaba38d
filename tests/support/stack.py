"""The real local stack as the tests use it: free ports, a private OPA, the session's tag, fresh
databases, and the Kafka grants and topics of a session's settings."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.orm import Session, sessionmaker

from services import migrations
from services.db import make_engine, make_sessionmaker, transaction
from services.devstack import opa, postgres
from services.kafka import topics
from services.kafka.client import ADMIN, kafka
from services.kafka.provisioning import provision
from services.registry.service import load_registry
from services.settings import Settings
from tests.support.keys import AUDIT_KEY
from tests.support.registry import REGISTRY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def opa_server(s: Settings, port: int, tmp: Path) -> Iterator[None]:
    meta = tmp / "meta.json"
    meta.write_text(json.dumps({"revision": opa.policy_revision(s.policies_dir)}))
    proc = subprocess.Popen(
        [
            str(opa.binary(s)),
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{port}",
            "--ignore",
            "schemas",
            str(s.policies_dir),
            f"accord.meta:{meta}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("private OPA exited at start") from None
                time.sleep(0.1)
        yield
    finally:
        proc.kill()
        proc.wait()


def run_tag(s: Settings) -> str:
    """The session's tag: every topic, group and transactional id of the session, and of the
    settings tests derive from it, is named ``<tag>.…`` or ``<tag>-…``."""
    return s.topic_inbound.split(".")[0]


def audit_key_file(base: Settings, run: str) -> Path:
    path = base.state_dir / "keys" / f"{run}-audit.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base64.b64encode(bytes(AUDIT_KEY)).decode())
    path.chmod(0o400)
    return path


def fresh_database(url: str) -> sessionmaker[Session]:
    """Empty the database at ``url``, migrate it, load the test registry; its sessions."""
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    migrations.upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    with transaction(sessions) as session:
        load_registry(session=session, registry=REGISTRY)
    return sessions


def private_api(settings: Settings, name: str) -> tuple[Settings, sessionmaker[Session]]:
    """Settings for an API of a test module's own, and its database's sessions: the database
    ``<test database>_<name>`` emptied and migrated, topics and groups named under the session's
    tag (cleaned up with the session), a free port."""
    tag = f"{run_tag(settings)}-{name}{uuid.uuid4().hex[:6]}"
    db = f"{os.environ.get('ACCORD_TEST_DATABASE', 'accord_test')}_{name}"
    postgres.ensure_database(settings, db)
    url = postgres.url(settings, db)
    sessions = fresh_database(url)
    s = settings.model_copy(
        update={
            "database_url": url,
            "api_port": free_port(),
            "relay_group": tag,
            "topic_inbound": f"{tag}.inbound",
            "topic_decisions": f"{tag}.decisions",
            "topic_deadletter": f"{tag}.deadletter",
            "topic_consents": f"{tag}.consents",
            "partner_topic_prefix": f"{tag}.partner.",
        }
    )
    return s, sessions


async def kafka_ready(s: Settings, partners: list[str] | None = None) -> None:
    """As the operator: grant these settings' topics to the relay, the API, the audit sink,
    the registry's agencies and partners (and ``partners``), then create the core topics.
    Every component then connects as its own principal, so the whole suite runs under the
    ACLs of ``services/kafka/acls.py``."""
    await provision(
        s,
        agencies=[a.id for a in REGISTRY.agencies],
        partners=[p.id for p in REGISTRY.partners] + (partners or []),
    )
    await topics.ensure_topics(kafka(s, ADMIN), topics.core_topics(s))
