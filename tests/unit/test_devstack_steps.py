"""`accord dev up` says what it is doing: the slow first-time steps announce themselves.

The installs themselves (go install, Maven) are replaced by a recorder: this checks what is
printed before them and that nothing is printed when there is nothing to install.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from services.devstack import kafka, opa
from services.devstack.process import Steps
from services.settings import Settings


def recording(lines: list[str]) -> Steps:
    return Steps(lines.append)


def recorder(ran: list[Sequence[str]]) -> Callable[..., str]:
    """Stands in for process.run: records the command instead of running it."""

    def run(argv: Sequence[str], **_: object) -> str:
        ran.append(list(argv))
        return ""

    return run


def test_a_step_line_carries_the_elapsed_time_and_the_slow_note() -> None:
    lines: list[str] = []
    steps = recording(lines)
    steps("opa: starting")
    steps("kafka: fetching jars", slow=True)
    assert lines[0].endswith("s] opa: starting")
    assert lines[0].startswith("[")
    assert lines[1].endswith("kafka: fetching jars (only the first time; may take minutes)")


def test_no_echo_prints_nothing() -> None:
    Steps()("anything", slow=True)  # must not raise nor print


def test_building_opa_is_announced_only_when_the_binary_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[Sequence[str]] = []
    monkeypatch.setattr(opa, "run", recorder(ran))
    s = Settings(_env_file=None, cache_dir=tmp_path)
    lines: list[str] = []
    opa.ensure_binary(s, recording(lines))
    assert len(ran) == 1 and ran[0][:2] == ["go", "install"]
    assert len(lines) == 1 and "go install" in lines[0] and "may take minutes" in lines[0]
    opa.binary(s).write_text("")  # now cached
    lines.clear()
    opa.ensure_binary(s, recording(lines))
    assert lines == [] and len(ran) == 1


def test_fetching_kafka_jars_is_announced_only_when_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[Sequence[str]] = []
    monkeypatch.setattr(kafka, "run", recorder(ran))
    s = Settings(_env_file=None, cache_dir=tmp_path)
    lines: list[str] = []
    kafka.ensure_jars(s, recording(lines))
    assert len(ran) == 1 and ran[0][0] == "mvn"
    assert len(lines) == 1 and "Maven" in lines[0] and "may take minutes" in lines[0]
    lines.clear()
    kafka.ensure_jars(s, recording(lines))  # the marker was written: cached
    assert lines == [] and len(ran) == 1
