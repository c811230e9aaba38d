"""The local stack (Kafka, OPA, PostgreSQL), installed and started by the project itself.

``up`` is idempotent: it installs what is missing (cached under ``~/.cache/accord``), starts
what is not running, waits for each health check, and writes ``<state_dir>/stack.env`` so
every Accord process finds the stack. ``down`` stops only the processes ``up`` started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.devstack import kafka, opa, postgres
from services.devstack.process import StackError, Steps, stop
from services.settings import Settings

__all__ = ["ServiceStatus", "StackError", "down", "status", "up"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    healthy: bool
    address: str


def _write_env(s: Settings) -> None:
    env = s.state_dir / "stack.env"
    env.write_text(
        f"ACCORD_KAFKA_BOOTSTRAP={s.bootstrap_servers}\n"
        f"ACCORD_OPA_URL={s.opa_base_url}\n"
        f"ACCORD_DATABASE_URL={postgres.url(s)}\n"
    )
    env.chmod(0o600)


def up(s: Settings, echo: Callable[[str], None] | None = None) -> list[str]:
    """Start what is not running; with ``echo``, say each step as it begins and each service
    once it is up (a fresh machine takes minutes: apt-get, ``go install``, Maven)."""
    s.state_dir.mkdir(parents=True, exist_ok=True)
    steps = Steps(echo)
    lines = []
    for service in (postgres, opa, kafka):
        lines.append(service.up(s, steps))
        steps(lines[-1])
    if not (s.audit_signing_key_file or s.audit_verify_key):
        # Development: the checkpoint key pair, so that the API (which verifies with the
        # published half) starts before the checkpointer has ever run (docs/audit.md).
        from services.audit.signing import create_dev_key

        lines.append(f"audit: checkpoint key {create_dev_key(s)} (development only)")
        steps(lines[-1])
    _write_env(s)
    return lines


def down(s: Settings) -> list[str]:
    lines = []
    for name, proc in (
        ("kafka", kafka.managed(s)),
        ("opa", opa.managed(s)),
        ("postgres", postgres.managed(s)),
    ):
        lines.append(f"{name}: {'stopped' if stop(proc) else 'was not running'}")
    (s.state_dir / "stack.env").unlink(missing_ok=True)
    return lines


def status(s: Settings) -> list[ServiceStatus]:
    return [
        ServiceStatus("kafka", kafka.managed(s).pid(), kafka.healthy(s), s.bootstrap_servers),
        ServiceStatus("opa", opa.managed(s).pid(), opa.healthy(s), s.opa_base_url),
        ServiceStatus(
            "postgres",
            postgres.managed(s).pid(),
            postgres.healthy(s),
            f"127.0.0.1:{s.postgres_port}",
        ),
    ]
