"""``accord audit verify`` (the report as text, exit 1 if broken) and ``accord audit
checkpointer`` (the worker that alone signs and witnesses checkpoints)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from services.audit import store
from services.audit.chain import Checkpoint, VerifyReport
from services.audit.signing import appender_verify_key, checkpoint_verify_key
from services.audit.witness import read_file, read_topic
from services.db import make_engine, make_sessionmaker
from services.kafka.client import AUDIT, kafka
from services.settings import Settings


def witnessed(s: Settings, witness_file: Path | None = None) -> list[Checkpoint]:
    """The witnessed records: a kept JSON-lines copy, else the witness topic (read as the
    audit principal)."""
    if witness_file is not None:
        return read_file(witness_file)
    return asyncio.run(read_topic(kafka(s, AUDIT), s.topic_audit_checkpoints))


def run_verify(s: Settings, witness_file: Path | None = None) -> VerifyReport:
    records = witnessed(s, witness_file)
    engine = make_engine(s.sqlalchemy_url)
    try:
        return store.verify_database(
            make_sessionmaker(engine), records, checkpoint_verify_key(s), appender_verify_key(s)
        )
    finally:
        engine.dispose()


def verify_command(
    s: Settings, echo: Callable[[str], None], witness_file: Path | None = None
) -> int:
    report = run_verify(s, witness_file)
    echo(
        f"entries {report.entries} (seq {report.first_seq}..{report.last_seq}), "
        f"witnessed checkpoints {report.checkpoints_verified}/{report.checkpoints} verified, "
        f"head {report.head or '-'}"
    )
    if report.pruned_through is not None:
        echo(f"pruned by retention through seq {report.pruned_through} (witnessed)")
    for p in report.problems:
        echo(f"BROKEN seq {p.seq}..{p.through}: {p.reason}: {p.detail}")
    for c in report.checkpoint_problems:
        echo(f"BAD CHECKPOINT seq {c.seq}: {c.reason}: {c.detail}")
    echo("chain verified" if report.ok else "chain BROKEN")
    return 0 if report.ok else 1


def checkpointer_command(s: Settings) -> None:
    """Run the checkpointer until interrupted (or fenced by a newer one)."""
    import os

    from services.runtime import running_checkpointer

    if os.environ.get("ACCORD_AUDIT_SIGNING_KEY"):
        # The key no longer travels in the environment, where every process would see it.
        raise SystemExit(
            "ACCORD_AUDIT_SIGNING_KEY is no longer read: put the key in a file only this "
            "process's user can read and set ACCORD_AUDIT_SIGNING_KEY_FILE (docs/audit.md)"
        )

    async def forever() -> None:
        async with running_checkpointer(
            s, health_port=s.audit_checkpointer_health_port
        ) as checkpointer:
            assert checkpointer.task is not None
            await checkpointer.task

    asyncio.run(forever())
