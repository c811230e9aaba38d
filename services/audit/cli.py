"""``accord audit verify``: the verify report, as text, and an exit status (1 if broken)."""

from __future__ import annotations

from collections.abc import Callable

from services.audit import store
from services.audit.chain import VerifyReport
from services.db import make_engine, make_sessionmaker
from services.keys import audit_key
from services.settings import Settings


def run_verify(s: Settings) -> VerifyReport:
    engine = make_engine(s.sqlalchemy_url)
    try:
        return store.verify_database(make_sessionmaker(engine), audit_key(s).verify_key)
    finally:
        engine.dispose()


def verify_command(s: Settings, echo: Callable[[str], None]) -> int:
    report = run_verify(s)
    echo(
        f"entries {report.entries} (seq {report.first_seq}..{report.last_seq}), "
        f"checkpoints {report.checkpoints_verified}/{report.checkpoints} verified, "
        f"head {report.head or '-'}"
    )
    if report.pruned_through is not None:
        echo(f"pruned by retention through seq {report.pruned_through}")
    for p in report.problems:
        echo(f"BROKEN seq {p.seq}: {p.reason}: {p.detail}")
    for c in report.checkpoint_problems:
        echo(f"BAD CHECKPOINT seq {c.seq}: {c.reason}: {c.detail}")
    echo("chain verified" if report.ok else "chain BROKEN")
    return 0 if report.ok else 1
