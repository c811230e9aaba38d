"""The API process cannot read the checkpoint signing key (issue 17), shown with real processes
and real file permissions rather than by the API's code merely not asking for it.

Deployed as docs/audit.md says: the checkpointer runs as an OS user of its own, the only one
that can read the key file (0400); the API runs as another. Here `accord audit checkpointer`
runs as uid 64011 and `accord api` as uid 64010 (tests run as root, so ``setpriv`` can drop to
them), each with the Kafka credential of its own principal only, on a database of their own.
The test shows that the checkpointer signs and witnesses the chain, that the API verifies it
with the published verify key, that a process with the API's uid gets EACCES on the key file,
and that the API process holds no key: not in its environment, not among its open files.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

from services.audit import store
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import make_engine, make_sessionmaker, transaction
from services.devstack import postgres
from services.kafka import client as kafka_client
from services.kafka.client import API, AUDIT, CHECKPOINTER
from services.settings import REPO_ROOT, Settings
from tests.support.stack import free_port, fresh_database, kafka_ready, run_tag

pytestmark = pytest.mark.integration

API_UID, CHECKPOINTER_UID = 64010, 64011
ACCORD = str(REPO_ROOT / ".venv" / "bin" / "accord")
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
KEY = SigningKey.generate()  # the checkpoint key: only the checkpointer's file holds it
APPENDER = SigningKey.generate()

if os.geteuid() != 0 or shutil.which("setpriv") is None:
    pytest.skip("needs root and setpriv to run processes as other users", allow_module_level=True)


def as_user(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def private_dir(path: Path, uid: int) -> Path:
    path.mkdir()
    os.chown(path, uid, uid)
    path.chmod(0o700)
    return path


def owned_file(path: Path, text: str, uid: int, mode: int = 0o400) -> Path:
    path.write_text(text)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


@dataclass
class Apart:
    settings: Settings
    key_file: Path
    witness_file: Path
    api: subprocess.Popen[bytes]
    api_url: str
    checkpointer: subprocess.Popen[bytes]
    compliance: str
    api_env: dict[str, str]


async def _provisioned(s: Settings) -> None:
    await kafka_ready(s)


@pytest.fixture(scope="module")
def apart(settings: Settings) -> Iterator[Apart]:
    run = f"{run_tag(settings)}.apart"
    db = f"{os.environ.get('ACCORD_TEST_DATABASE', 'accord_test')}_apart"
    postgres.ensure_database(settings, db)
    s = settings.model_copy(
        update={
            "database_url": postgres.url(settings, db),
            "topic_inbound": f"{run}.inbound",
            "topic_decisions": f"{run}.decisions",
            "topic_deadletter": f"{run}.deadletter",
            "topic_consents": f"{run}.consents",
            "topic_seen": f"{run}.seen",
            "partner_topic_prefix": f"{run}.partner.",
            "relay_group": f"{run_tag(settings)}-apart-relay",
            "topic_audit_checkpoints": f"{run}.audit.checkpoints",
            "audit_checkpointer_transactional_id": f"{run_tag(settings)}-apart-checkpointer",
            "api_port": free_port(),
        }
    )
    fresh_database(s.database_url)
    loop = asyncio.new_event_loop()  # a sync fixture: the session's loop is not running here
    try:
        loop.run_until_complete(_provisioned(s))
    finally:
        loop.close()
    # Not under pytest's tmp root: that is 0700 root's, and the two users must reach theirs.
    root = Path(tempfile.mkdtemp(prefix="accord-apart-"))
    root.chmod(0o755)
    ca = root / "ca.pem"
    shutil.copy(kafka_client.ca_path(s), ca)
    ca.chmod(0o444)
    creds = kafka_client.load_credentials(s)
    ckp_dir = private_dir(root / "checkpointer", CHECKPOINTER_UID)
    api_dir = private_dir(root / "api", API_UID)
    key_file = owned_file(
        ckp_dir / "audit.key", base64.b64encode(bytes(KEY)).decode(), CHECKPOINTER_UID
    )
    common = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ACCORD_KAFKA_BOOTSTRAP": s.bootstrap_servers,
        "ACCORD_KAFKA_CA_FILE": str(ca),
        "ACCORD_DATABASE_URL": s.database_url,
        "ACCORD_OPA_URL": s.opa_base_url,
        "ACCORD_TOPIC_INBOUND": s.topic_inbound,
        "ACCORD_TOPIC_DECISIONS": s.topic_decisions,
        "ACCORD_TOPIC_DEADLETTER": s.topic_deadletter,
        "ACCORD_TOPIC_CONSENTS": s.topic_consents,
        "ACCORD_TOPIC_SEEN": s.topic_seen,
        "ACCORD_PARTNER_TOPIC_PREFIX": s.partner_topic_prefix,
        "ACCORD_RELAY_GROUP": s.relay_group,
        "ACCORD_TOPIC_AUDIT_CHECKPOINTS": s.topic_audit_checkpoints,
        "ACCORD_AUDIT_CHECKPOINTER_TRANSACTIONAL_ID": s.audit_checkpointer_transactional_id,
        "ACCORD_AUDIT_VERIFY_KEY": bytes(KEY.verify_key).hex(),
        "ACCORD_AUDIT_APPENDER_VERIFY_KEY": bytes(APPENDER.verify_key).hex(),
    }
    witness_file = ckp_dir / "checkpoints.jsonl"
    ckp_env = {
        **common,
        "HOME": str(ckp_dir),
        "ACCORD_STATE_DIR": str(ckp_dir),
        "ACCORD_KAFKA_CREDENTIALS_FILE": str(
            owned_file(
                ckp_dir / "kafka.json",
                json.dumps({CHECKPOINTER: creds[CHECKPOINTER]}),
                CHECKPOINTER_UID,
            )
        ),
        "ACCORD_AUDIT_SIGNING_KEY_FILE": str(key_file),
        "ACCORD_AUDIT_CHECKPOINT_INTERVAL_S": "0.5",
        "ACCORD_AUDIT_WITNESS_FILE": str(witness_file),
    }
    api_env = {
        **common,
        "HOME": str(api_dir),
        "ACCORD_STATE_DIR": str(api_dir),
        "ACCORD_KAFKA_CREDENTIALS_FILE": str(
            # the audit sink still runs in the API process (issue 12 moves it out)
            owned_file(
                api_dir / "kafka.json",
                json.dumps({p: creds[p] for p in (API, AUDIT)}),
                API_UID,
            )
        ),
        "ACCORD_AUDIT_APPENDER_KEY": base64.b64encode(bytes(APPENDER)).decode(),
        "ACCORD_API_PORT": str(s.api_port),
    }
    logs = root / "logs"
    logs.mkdir()
    checkpointer = subprocess.Popen(
        [*as_user(CHECKPOINTER_UID), ACCORD, "audit", "checkpointer"],
        env=ckp_env,
        cwd=ckp_dir,
        stdout=(logs / "checkpointer.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    api = subprocess.Popen(
        [*as_user(API_UID), ACCORD, "api"],
        env=api_env,
        cwd=api_dir,
        stdout=(logs / "api.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{s.api_port}"
    engine = make_engine(s.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            compliance = issue_credential(session=session, role=Role.COMPLIANCE, subject="cmp-x")
        _wait_for_api(url, api, logs / "api.log")
        yield Apart(s, key_file, witness_file, api, url, checkpointer, compliance, api_env)
    finally:
        engine.dispose()
        for proc in (api, checkpointer):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root)


def _wait_for_api(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{url}/v1/audit/verify", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError("the API did not start")


def _witnessed_seqs(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["seq"] for line in path.read_text().splitlines() if line]


def test_the_checkpointer_signs_and_the_api_verifies_without_the_key(apart: Apart) -> None:
    engine = make_engine(apart.settings.database_url)
    try:
        sessions = store.with_appender(make_sessionmaker(engine), APPENDER)
        tag = uuid.uuid4().hex[:6]
        for i in range(3):
            with transaction(sessions) as session:
                store.append(session, "review", f"review:apart-{tag}-{i}", {"i": i})
        with sessions() as session:
            head = store.head(session)[0]
    finally:
        engine.dispose()
    deadline = time.monotonic() + 60
    while head not in _witnessed_seqs(apart.witness_file):
        assert apart.checkpointer.poll() is None, "the checkpointer exited"
        assert time.monotonic() < deadline, "the checkpointer did not witness the head"
        time.sleep(0.3)
    resp = httpx.get(
        f"{apart.api_url}/v1/audit/verify",
        headers={"Authorization": f"Bearer {apart.compliance}"},
        timeout=60,
    )
    assert resp.status_code == 200
    report = resp.json()
    assert report["ok"], report
    assert report["checkpoints_verified"] >= 1 and report["last_seq"] == head
    assert report["verify_key"] == bytes(KEY.verify_key).hex()


def test_the_api_process_cannot_read_the_signing_key(apart: Apart) -> None:
    st = apart.key_file.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (CHECKPOINTER_UID, 0o400)
    status = Path(f"/proc/{apart.api.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(API_UID)] * 4  # real, effective, saved, filesystem
    # What the API's uid gets when it tries, with the API's environment, through the same
    # code the checkpointer uses
    probe = subprocess.run(
        [
            *as_user(API_UID),
            PYTHON,
            "-c",
            "import sys; from pathlib import Path; from services.audit.signing import "
            "FileSigner, KeyFileError\n"
            "try:\n    FileSigner(Path(sys.argv[1]))\n"
            "except KeyFileError as e:\n    print(e); sys.exit(3)",
            str(apart.key_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env=apart.api_env,  # the API's own environment
    )
    assert probe.returncode == 3, (probe.stdout, probe.stderr)
    assert "Permission denied" in probe.stdout
    # and the checkpointer's uid can (the file is not simply unreadable)
    ok = subprocess.run(
        [*as_user(CHECKPOINTER_UID), "cat", str(apart.key_file)], capture_output=True, timeout=10
    )
    assert ok.returncode == 0 and ok.stdout.strip() == base64.b64encode(bytes(KEY))
    # The API process holds no key material: not in its environment, not among its files.
    seed = base64.b64encode(bytes(KEY)).decode()
    environ = Path(f"/proc/{apart.api.pid}/environ").read_bytes().decode(errors="replace")
    assert seed not in environ and "AUDIT_SIGNING_KEY" not in environ
    fds = Path(f"/proc/{apart.api.pid}/fd")
    opened = {os.readlink(fd) for fd in fds.iterdir() if fd.exists()}
    assert str(apart.key_file) not in opened
