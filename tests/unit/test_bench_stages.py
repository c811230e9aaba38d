"""The benchmark's per-stage breakdown, read from the relay's log lines."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench.relay_bench import latency_tail_causes, stage_medians


def line(**stages: float) -> str:
    return json.dumps({"msg": "batch relayed", "events": 1, "stages_ms": stages})


def test_medians_per_stage_after_the_skipped_lines(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    log.write_text(
        "\n".join(
            [
                line(decide=900.0, commit=900.0),  # throughput phase: skipped
                "not json",
                line(views=1.0, decide=40.0, commit=8.0),
                json.dumps({"msg": "event rejected: stale", "code": "stale"}),
                line(views=3.0, decide=60.0, commit=12.0),
                line(views=2.0, decide=50.0, commit=10.0),
            ]
        )
    )
    assert stage_medians(log, skip_lines=1) == {"views": 2.0, "decide": 50.0, "commit": 10.0}


def reused(asked: int) -> str:
    return json.dumps({"msg": "decisions reused", "hits": 0, "misses": 0, "asked": asked})


def test_latency_tail_causes_count_only_the_polls_after_the_skipped_lines(tmp_path: Path) -> None:
    retry = (
        "Got error produce response on topic-partition t, retrying. "
        "Error: <class 'aiokafka.errors.NotEnoughReplicasError'>"
    )
    log = tmp_path / "relay.log"
    log.write_text(
        "\n".join(
            [
                reused(500),  # throughput phase: skipped, but its total is where counting starts
                json.dumps({"msg": retry}),
                reused(500),
                reused(520),
                json.dumps({"msg": retry}),
                reused(520),
                reused(523),
            ]
        )
    )
    assert latency_tail_causes(log, skip_lines=2) == ((4, 2, 23), 1)
