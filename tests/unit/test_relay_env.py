"""The relay child process gets the keys of the stack it runs against (tools/bench/harness.py).

`accord faults` runs its relay against a private stack whose development keys live under a
temporary state dir; a child that did not get that dir (or the configured KEKs) made keys of
its own and failed on every event: "a wrapped data key does not open under its KEK".
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from services.atrest.keys import kek_ring, relay_key
from services.audit.signing import appender_key
from services.settings import Settings
from tools.bench.harness import relay_env


def child_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings an ``accord relay`` started with ``env`` reads."""
    for name in [n for n in os.environ if n.startswith("ACCORD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("ACCORD_"):
            monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def opens_under_child(parent: Settings, child: Settings) -> bool:
    wrapped = kek_ring(parent).active.wrap(b"k" * 32, b"survivor sv-1")
    ring = kek_ring(child)
    return ring.unwrap(kek_ring(parent).active_id, wrapped, b"survivor sv-1") == b"k" * 32


def test_the_child_uses_the_private_state_dirs_key_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = Settings(_env_file=None, state_dir=tmp_path / "stack")
    child = child_settings(relay_env(parent), monkeypatch)
    assert child.state_dir == parent.state_dir
    assert opens_under_child(parent, child)
    assert bytes(relay_key(child)) == bytes(relay_key(parent))
    assert bytes(appender_key(child)) == bytes(appender_key(parent))


def test_the_child_gets_configured_keks_and_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b64 = [base64.b64encode(os.urandom(32)).decode() for _ in range(4)]
    parent = Settings(
        _env_file=None,
        state_dir=tmp_path / "elsewhere",
        keks=f"old:{b64[0]},new:{b64[1]}",
        kek_active="new",
        relay_private_key=b64[2],
        audit_appender_key=b64[3],
    )
    child = child_settings(relay_env(parent), monkeypatch)
    assert opens_under_child(parent, child)
    assert kek_ring(child).active_id == "new"
    assert bytes(relay_key(child)) == bytes(relay_key(parent))
    assert bytes(appender_key(child)) == bytes(appender_key(parent))
    assert not (tmp_path / "elsewhere" / "keys").exists()  # nothing fell back to key files
