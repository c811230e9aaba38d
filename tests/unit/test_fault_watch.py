"""The fault suite's watch: when restarts make no progress, and the relay's last error line."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench.faults import StallWatch, last_error


def test_restarts_without_a_new_commit_are_a_stall() -> None:
    watch = StallWatch(max_restarts=3, max_idle_s=1000)
    assert watch.observe(0, relayed=0, restarts=0, waiting=True) is None
    assert watch.observe(1, relayed=0, restarts=2, waiting=True) is None
    reason = watch.observe(2, relayed=0, restarts=3, waiting=True)
    assert reason == "3 relay restarts without a new commit"


def test_a_new_commit_resets_the_count() -> None:
    watch = StallWatch(max_restarts=3, max_idle_s=1000)
    watch.observe(0, relayed=0, restarts=0, waiting=True)
    watch.observe(1, relayed=0, restarts=2, waiting=True)
    assert watch.observe(2, relayed=10, restarts=2, waiting=True) is None  # progress
    assert watch.observe(3, relayed=10, restarts=4, waiting=True) is None
    assert watch.observe(4, relayed=10, restarts=5, waiting=True) is not None


def test_time_without_a_commit_while_events_wait_is_a_stall() -> None:
    watch = StallWatch(max_restarts=100, max_idle_s=60)
    watch.observe(0, relayed=5, restarts=0, waiting=True)
    assert watch.observe(59, relayed=5, restarts=0, waiting=True) is None
    assert watch.observe(60, relayed=5, restarts=0, waiting=True) == "no new commit for 60 s"


def test_nothing_waiting_is_never_a_stall() -> None:
    # Between faults' bursts, or before the first event: an idle relay is not stuck.
    watch = StallWatch(max_restarts=1, max_idle_s=10)
    watch.observe(0, relayed=5, restarts=0, waiting=False)
    assert watch.observe(500, relayed=5, restarts=3, waiting=False) is None
    assert watch.observe(505, relayed=5, restarts=3, waiting=True) is None  # counts from now


def test_last_error_of_a_crash_traceback(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    log.write_text(
        json.dumps({"level": "info", "logger": "accord.relay", "msg": "relay started"})
        + "\n╭───── Traceback (most recent call last) ─────╮\n"
        + "│ /x/services/atrest/envelope.py:76 in unwrap │\n"
        + "╰──────────────────────────────────────────────╯\n"
        + "Unreadable: a wrapped data key does not open under its KEK\n"
        + "\n"
    )
    assert last_error(log) == "Unreadable: a wrapped data key does not open under its KEK"


def test_last_error_prefers_the_latest_json_error(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    lines = [
        "aiokafka.errors.KafkaConnectionError: an older crash",
        json.dumps({"level": "error", "logger": "accord.relay", "msg": "batch held", "error": "X"}),
        json.dumps({"level": "info", "logger": "accord.relay", "msg": "batch relayed"}),
    ]
    log.write_text("\n".join(lines) + "\n")
    assert last_error(log) == "accord.relay: batch held (X)"


def test_last_error_names_the_cause_of_a_held_batch(tmp_path: Path) -> None:
    # A slow OPA holds every batch without an error-level line: the cause is the diagnosis.
    log = tmp_path / "relay.log"
    lines = [
        json.dumps({"level": "error", "logger": "aiokafka", "msg": "Heartbeat session expired"}),
        json.dumps(
            {"level": "warning", "logger": "accord.relay", "msg": "batch held", "cause": "P"}
        ),
        json.dumps({"level": "debug", "logger": "accord.relay", "msg": "poll"}),
    ]
    log.write_text("\n".join(lines) + "\n")
    assert last_error(log) == "accord.relay: batch held (P)"


def test_last_error_without_a_log(tmp_path: Path) -> None:
    assert last_error(tmp_path / "missing.log") == "(the relay wrote no log)"
    (tmp_path / "quiet.log").write_text("Traceback (most recent call last):\n")
    assert last_error(tmp_path / "quiet.log") == "(no error in the relay's log)"
