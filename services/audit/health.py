"""The checkpointer's health: its Prometheus metrics (services/observability/metrics.py)
and a readiness flag, false while it refuses to sign.

* ``accord_audit_checkpoints_signed_total``: witnessed records the checkpointer published;
* ``accord_audit_checkpoint_refusals_total``: heads it refused to sign;
* ``accord_audit_chain_follows``: 1 while the database's chain follows the witness, else 0.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from services.audit.chain import BrokenRange
from services.observability import metrics as prom


@dataclass
class _State:
    signed_total: int = 0
    refusals_total: int = 0
    follows: bool = True
    last_signed_seq: int | None = None
    last_refusal: BrokenRange | None = None


_lock = threading.Lock()
STATE = _State()


def signed(seq: int) -> None:
    with _lock:
        STATE.signed_total += 1
        STATE.last_signed_seq = seq
    prom.AUDIT_CHECKPOINTS_SIGNED.inc()


def refused(problem: BrokenRange) -> None:
    with _lock:
        STATE.refusals_total += 1
        STATE.follows = False
        STATE.last_refusal = problem
    prom.AUDIT_CHECKPOINT_REFUSALS.inc()
    prom.AUDIT_CHAIN_FOLLOWS.set(0)


def following() -> None:
    with _lock:
        STATE.follows = True
    prom.AUDIT_CHAIN_FOLLOWS.set(1)


def ready() -> bool:
    """Readiness of the checkpointer: false while it refuses to sign."""
    with _lock:
        return STATE.follows


async def readiness() -> dict[str, bool]:
    """For the checkpointer's /readyz (services/observability/server.py)."""
    return {"chain_follows": ready()}


def metrics() -> dict[str, float]:
    with _lock:
        return {
            "accord_audit_checkpoints_signed_total": STATE.signed_total,
            "accord_audit_checkpoint_refusals_total": STATE.refusals_total,
            "accord_audit_chain_follows": 1.0 if STATE.follows else 0.0,
        }
