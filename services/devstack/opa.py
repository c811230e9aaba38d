"""Open Policy Agent server, built from source with ``go install`` at a pinned version."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

from services.devstack.process import (
    QUIET,
    Managed,
    StackError,
    Steps,
    port_open,
    run,
    spawn,
    stop,
    wait_until,
)
from services.settings import Settings


def managed(s: Settings) -> Managed:
    return Managed("opa", s.state_dir / "pids" / "opa.pid", s.state_dir / "logs" / "opa.log")


def binary(s: Settings) -> Path:
    return s.cache_dir / f"opa-{s.opa_version}" / "opa"


def ensure_binary(s: Settings, steps: Steps = QUIET) -> Path:
    opa = binary(s)
    if opa.exists():
        return opa
    steps(f"opa: building OPA {s.opa_version} with go install into {opa.parent}", slow=True)
    opa.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOBIN=str(opa.parent), CGO_ENABLED="0")
    run(
        ["go", "install", f"github.com/open-policy-agent/opa@{s.opa_version}"],
        what=f"building OPA {s.opa_version} with go install",
        env=env,
    )
    return opa


def policy_revision(policies: Path) -> str:
    """Content hash of the policy tree: the revision every decision records (R13)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in policies.rglob("*") if p.is_file()):
        if path.suffix in {".rego", ".json"} and not path.name.endswith("_test.rego"):
            digest.update(str(path.relative_to(policies)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:16]


def healthy(s: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{s.opa_base_url}/health", timeout=1) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


def _served_revision(s: Settings) -> str | None:
    try:
        return str(json.loads((s.state_dir / "opa" / "meta.json").read_text())["revision"])
    except (OSError, ValueError, KeyError):
        return None


def up(s: Settings, steps: Steps = QUIET) -> str:
    proc = managed(s)
    revision = policy_revision(s.policies_dir)
    if proc.pid() is not None and _served_revision(s) != revision:
        stop(proc)  # the policy tree changed: never keep serving old rules
    if proc.pid() is not None and healthy(s):
        return f"opa already running (pid {proc.pid()}, policy {revision})"
    if proc.pid() is None and port_open(s.opa_port):
        raise StackError(
            f"port {s.opa_port} is taken by a process this stack did not start; "
            "set ACCORD_OPA_PORT to another port"
        )
    opa = ensure_binary(s, steps)
    steps(f"opa: starting on {s.opa_base_url}")
    meta = s.state_dir / "opa" / "meta.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"revision": revision}))
    argv = [
        str(opa),
        "run",
        "--server",
        "--addr",
        f"127.0.0.1:{s.opa_port}",
        "--log-format",
        "json",
        "--log-level",
        "error",
        "--ignore",
        "schemas",
        str(s.policies_dir),
        f"accord.meta:{meta}",
    ]
    if proc.pid() is None:
        spawn(proc, argv)
    wait_until(lambda: healthy(s), what="opa", timeout_s=30, log_file=proc.log_file)
    return f"opa {s.opa_version} on {s.opa_base_url} (pid {proc.pid()}, policy {revision})"
