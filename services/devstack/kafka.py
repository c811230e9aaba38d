"""Apache Kafka in KRaft mode, one node on 127.0.0.1, from jars fetched off Maven Central.

Hardened like production: clients connect with SASL/SCRAM-SHA-512 over TLS only, the
certificate is signed by a CA made for this stack (``<state_dir>/kafka/tls/``), and ACLs
decide everything (``allow.everyone.if.no.acl.found=false``). The super user's credential is
written into the metadata at format time; ``up`` then provisions the fixed principals (relay,
API, audit sink) and their ACLs through the Admin API (``services/kafka/provisioning.py``).
Passwords are generated into ``<state_dir>/kafka/credentials.json`` (0600) and never printed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import uuid
from pathlib import Path
from string import Template

from aiokafka.admin import AIOKafkaAdminClient

from services.devstack import tls
from services.devstack.process import (
    QUIET,
    Managed,
    StackError,
    Steps,
    port_open,
    run,
    spawn,
    wait_until,
)
from services.kafka import client as kafka_client
from services.kafka import provisioning
from services.settings import REPO_ROOT, Settings

POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
TEMPLATE = REPO_ROOT / "deploy" / "kafka" / "server.properties.template"
LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
# Authenticates this node to its own controller listener (SASL/PLAIN, loopback).
CONTROLLER = "accord-controller"


def managed(s: Settings) -> Managed:
    return Managed("kafka", s.state_dir / "pids" / "kafka.pid", s.state_dir / "logs" / "kafka.log")


def _lib(s: Settings) -> Path:
    # Keyed by the POM too: a changed dependency list gets a clean directory, no stale jars.
    pom = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return s.cache_dir / f"kafka-{s.kafka_version}-{pom}" / "lib"


def lib_dir(s: Settings) -> str:
    return str(_lib(s))


def ensure_jars(s: Settings, steps: Steps = QUIET) -> None:
    lib = _lib(s)
    marker = lib / ".complete"
    if marker.exists():
        return
    steps(f"kafka: fetching Kafka {s.kafka_version}'s jars with Maven into {lib}", slow=True)
    lib.mkdir(parents=True, exist_ok=True)
    run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-Dkafka.version={s.kafka_version}",
            f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ],
        what=f"fetching Kafka {s.kafka_version} jars with Maven",
    )
    marker.write_text(s.kafka_version)


def _java(s: Settings, main: str, *args: str) -> list[str]:
    return [
        "java",
        "-Xms256m",
        "-Xmx768m",
        f"-Dlog4j2.configurationFile={LOG4J}",
        "-cp",
        f"{lib_dir(s)}/*",
        main,
        *args,
    ]


def render_config(s: Settings, *, host: str = "127.0.0.1", listen_host: str = "127.0.0.1") -> str:
    """The broker's configuration: it listens on ``listen_host`` and is reached as ``host``
    (both loopback for the dev stack; the compose pilot's service name and all addresses)."""
    data_dir = s.state_dir / "kafka" / "data"
    config = s.state_dir / "kafka" / "server.properties"
    config.parent.mkdir(parents=True, exist_ok=True)
    creds = kafka_client.ensure_passwords(s, [kafka_client.ADMIN, CONTROLLER])
    keystore, truststore = tls.ensure_broker_tls(s.state_dir / "kafka" / "tls")
    text = Template(TEMPLATE.read_text()).substitute(
        host=host,
        listen_host=listen_host,
        port=s.kafka_port,
        controller_port=s.kafka_controller_port,
        log_dirs=data_dir,
        admin=kafka_client.ADMIN,
        admin_password=creds[kafka_client.ADMIN],
        controller=CONTROLLER,
        controller_password=creds[CONTROLLER],
        keystore=keystore,
        truststore=truststore,
    )
    # The rendered file holds passwords: created 0600, never world-readable for a moment.
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    config.chmod(0o600)
    return str(config)


def cluster_id_for_cli() -> str:
    """A random cluster id as Kafka makes them (Uuid.randomUuid): URL-safe base64 of 16 bytes,
    never starting with '-', which the storage tool's argument parser would take for an option
    (one id in 64 did, and `accord dev up` failed)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def ensure_formatted(s: Settings, config: str, steps: Steps = QUIET) -> None:
    data = s.state_dir / "kafka" / "data"
    # Storage formatted before SASL (no super user in its metadata) could never be reached.
    marker = s.state_dir / "kafka" / "formatted-with-scram"
    if (data / "meta.properties").exists():
        if not marker.exists():
            raise StackError(
                f"Kafka's storage in {data} predates SASL/TLS and has no super user: run "
                "`accord dev down`, delete it (or `make clean`), then `accord dev up`"
            )
        return
    steps("kafka: formatting the storage (KRaft, with the super user's credential)")
    cluster_id = cluster_id_for_cli()
    admin_password = kafka_client.load_credentials(s)[kafka_client.ADMIN]
    # The super user must exist before the broker starts: nobody else could create it.
    scram = f"SCRAM-SHA-512=[name={kafka_client.ADMIN},password={admin_password}]"
    run(
        _java(
            s,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            config,
            "--add-scram",
            scram,
        ),
        what="formatting Kafka storage",
    )
    marker.write_text("")


async def _ready(s: Settings) -> bool:
    admin = AIOKafkaAdminClient(
        **kafka_client.kafka(s, kafka_client.ADMIN).kwargs(), request_timeout_ms=3000
    )
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # any failure means "not ready yet"
        return False
    finally:
        await admin.close()


def healthy(s: Settings) -> bool:
    return port_open(s.kafka_port) and asyncio.run(_ready(s))


GROUP, TRANSACTION = 0, 1  # FindCoordinator's key types


async def _coordinators(s: Settings) -> bool:
    """True once the broker coordinates consumer groups and transactions.

    A new broker creates ``__consumer_offsets`` and ``__transaction_state`` on the first
    FindCoordinator and answers COORDINATOR_NOT_AVAILABLE until their leaders are elected;
    clients retry, but aiokafka logs each try at ERROR (a healthy first `make demo` showed
    ``GroupCoordinatorNotAvailableError``). Asking here, until both answer, makes a started
    broker a ready one."""
    admin = AIOKafkaAdminClient(
        **kafka_client.kafka(s, kafka_client.ADMIN).kwargs(), request_timeout_ms=3000
    )
    try:
        await admin.start()
        for kind in (GROUP, TRANSACTION):
            await admin.find_coordinator("accord-readiness-probe", kind)
        return True
    except Exception:  # not available yet, or the broker is still starting
        return False
    finally:
        await admin.close()


def _wait_for_coordinators(s: Settings, proc: Managed) -> None:
    wait_until(
        lambda: asyncio.run(_coordinators(s)),
        what="kafka's group and transaction coordinators",
        timeout_s=90,
        log_file=proc.log_file,
    )


def up(s: Settings, steps: Steps = QUIET) -> str:
    proc = managed(s)
    if proc.pid() is not None and healthy(s):
        asyncio.run(provisioning.provision(s))  # idempotent: grants added since are applied
        _wait_for_coordinators(s, proc)  # a broker started before this check existed
        return f"kafka already running (pid {proc.pid()})"
    if proc.pid() is None and port_open(s.kafka_port):
        raise StackError(
            f"port {s.kafka_port} is taken by a process this stack did not start; "
            "set ACCORD_KAFKA_PORT to another port"
        )
    ensure_jars(s, steps)
    config = render_config(s)
    ensure_formatted(s, config, steps)
    steps(f"kafka: starting the broker on {s.bootstrap_servers}, waiting until it answers")
    if proc.pid() is None:
        spawn(proc, _java(s, "kafka.Kafka", config), env=dict(os.environ))
    wait_until(lambda: healthy(s), what="kafka", timeout_s=90, log_file=proc.log_file)
    steps("kafka: waiting for the group and transaction coordinators")
    _wait_for_coordinators(s, proc)
    steps("kafka: creating the principals' credentials and ACLs")
    asyncio.run(provisioning.provision(s))
    return f"kafka {s.kafka_version} on {s.bootstrap_servers}, SASL_SSL (pid {proc.pid()})"
