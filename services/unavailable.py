"""Why the relay holds a poll: one base for every dependency that cannot answer now.

A leaf module (it imports nothing of the project), so that the modules raising these causes
(the policy stage, the compacted-topic views, the registry and key readers) and the relay loop
that catches them can all import it without an import cycle.
"""

from __future__ import annotations


class Unavailable(RuntimeError):
    """A dependency of the relay (OPA, a view of a Kafka topic, the database) cannot answer
    now: nothing of the poll may be delivered; the relay rewinds it and retries after a
    backoff (R1, R3). Each subclass names its cause: one of ``metrics.HOLD_CAUSES``, the label
    of the held-batch counter (here rather than in metrics, which the relay's modules import)."""

    cause = "other"
