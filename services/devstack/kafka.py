"""Apache Kafka in KRaft mode, one node on 127.0.0.1, from jars fetched off Maven Central."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from string import Template

from aiokafka.admin import AIOKafkaAdminClient

from services.devstack.process import Managed, StackError, port_open, run, spawn, wait_until
from services.settings import REPO_ROOT, Settings

POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
TEMPLATE = REPO_ROOT / "deploy" / "kafka" / "server.properties.template"
LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"


def managed(s: Settings) -> Managed:
    return Managed("kafka", s.state_dir / "pids" / "kafka.pid", s.state_dir / "logs" / "kafka.log")


def lib_dir(s: Settings) -> str:
    return str(s.cache_dir / f"kafka-{s.kafka_version}" / "lib")


def ensure_jars(s: Settings) -> None:
    lib = s.cache_dir / f"kafka-{s.kafka_version}" / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return
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


def render_config(s: Settings) -> str:
    data_dir = s.state_dir / "kafka" / "data"
    config = s.state_dir / "kafka" / "server.properties"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        Template(TEMPLATE.read_text()).substitute(
            port=s.kafka_port, controller_port=s.kafka_controller_port, log_dirs=data_dir
        )
    )
    return str(config)


def ensure_formatted(s: Settings, config: str) -> None:
    if (s.state_dir / "kafka" / "data" / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    run(
        _java(s, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", config),
        what="formatting Kafka storage",
    )


async def _ready(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # any failure means "not ready yet"
        return False
    finally:
        await admin.close()


def healthy(s: Settings) -> bool:
    return port_open(s.kafka_port) and asyncio.run(_ready(s.bootstrap_servers))


def up(s: Settings) -> str:
    proc = managed(s)
    if proc.pid() is not None and healthy(s):
        return f"kafka already running (pid {proc.pid()})"
    if proc.pid() is None and port_open(s.kafka_port):
        raise StackError(
            f"port {s.kafka_port} is taken by a process this stack did not start; "
            "set ACCORD_KAFKA_PORT to another port"
        )
    ensure_jars(s)
    config = render_config(s)
    ensure_formatted(s, config)
    if proc.pid() is None:
        spawn(proc, _java(s, "kafka.Kafka", config), env=dict(os.environ))
    wait_until(lambda: healthy(s), what="kafka", timeout_s=90, log_file=proc.log_file)
    return f"kafka {s.kafka_version} on {s.bootstrap_servers} (pid {proc.pid()})"
