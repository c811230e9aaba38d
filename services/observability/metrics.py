"""Every Prometheus metric Accord exports, in one place (docs/operations.md lists them).

Label values are bounded by code or by the policy vocabulary, never by what a request or an
event carries: rule ids (``R1``…``R15``), decision outcomes, dead-letter codes, stage names,
hold causes, partner *types*, sink names and partition numbers. Never a survivor id, an event
id, an agency or partner id, or a field name. Partner ids are bounded by the registry, but a
network may register hundreds, and partner *type* is what the rules are written against, so
the per-partner view stays in the audit reports (``/v1/audit/reports/rules``).

Metrics live in prometheus-client's default registry: one per process, which is what each
process's ``/metrics`` serves. Counters of the relay move only once a batch's transaction is
committed, so a batch held and retried is counted once, as Kafka holds it once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

from services.unavailable import Unavailable

# --- relay -------------------------------------------------------------------------------

RELAY_EVENTS = PromCounter(
    "accord_relay_events",
    "Inbound records the relay committed: relayed (valid, decided) or rejected (dead-lettered).",
    ["result"],
)
RELAY_DELIVERIES = PromCounter(
    "accord_relay_deliveries",
    "Sealed deliveries written to partner topics, by partner type.",
    ["partner_type"],
)
RELAY_DECISIONS = PromCounter(
    "accord_relay_decisions",
    "Decision records (one per event × subscribed partner), by outcome and partner type.",
    ["outcome", "partner_type"],
)
RELAY_DECISION_RULES = PromCounter(
    "accord_relay_decision_rules",
    "Decisions naming a rule (in its reasons or a withheld field), by outcome and rule; a "
    "decision naming several rules counts once for each.",
    ["outcome", "rule"],
)
RELAY_DEAD_LETTERS = PromCounter(
    "accord_relay_dead_letters",
    "Inbound records dead-lettered, by reason code.",
    ["code"],
)
RELAY_HELD_BATCHES = PromCounter(
    "accord_relay_held_batches",
    "Batches held (nothing delivered, retried after a backoff), by cause.",
    ["cause"],
)
RELAY_HOLDING = Gauge(
    "accord_relay_holding",
    "1 while the relay holds a batch because a dependency is unavailable, else 0.",
)
RELAY_ASSIGNED_PARTITIONS = Gauge(
    "accord_relay_assigned_partitions",
    "Inbound partitions assigned to this relay instance.",
)
RELAY_LAG = Gauge(
    "accord_relay_consumer_lag",
    "Committed inbound records this relay instance has not relayed yet, per partition.",
    ["partition"],
)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RELAY_STAGE_SECONDS = Histogram(
    "accord_relay_stage_seconds",
    "Time per relay stage and poll (registry, views, unseal, validate, decide, seal, commit).",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
OPA_REQUEST_SECONDS = Histogram(
    "accord_opa_request_seconds",
    "Latency of decision requests to the OPA server, by result (ok, unavailable).",
    ["result"],
    buckets=STAGE_BUCKETS,
)
OPA_FAILOVERS = PromCounter(
    "accord_opa_failovers",
    "Decision requests a relay moved to its next OPA server because this one did not answer, "
    "by the server's position in ACCORD_OPA_URLS.",
    ["server"],
)

# --- sinks (the audit and rejection sinks; wired where they run) ---------------------------

REFERRAL_REPLIES = PromCounter(
    "accord_referral_replies",
    "Replies read from partners' referral reply topics, by outcome (applied, or the status "
    "of the refusal: 404, 409, 422; malformed, not_a_partner_action).",
    ["outcome"],
)

SINK_RECORDS = PromCounter(
    "accord_sink_records",
    "Records a sink stored in the database (redeliveries already stored not counted), by sink.",
    ["sink"],
)
SINK_LAG = Gauge(
    "accord_sink_consumer_lag",
    "Committed records of a sink's topic not stored yet, by sink and partition.",
    ["sink", "partition"],
)
AUDIT_CHAIN_OK = Gauge(
    "accord_audit_chain_ok",
    "1 if the last verification of the audit chain found it intact, 0 if broken.",
)
AUDIT_CHAIN_VERIFIED = Gauge(
    "accord_audit_chain_verified_timestamp_seconds",
    "When the audit chain was last verified (Unix time).",
)

# --- referral deadlines (accord deadlines) ------------------------------------------------

DEADLINES_DUE = Gauge(
    "accord_referral_deadlines_due",
    "Referral deadlines that had fallen due unmet and not yet fired at the worker's last pass, "
    "by kind (acknowledge, answer, expire); it stays above 0 only while the worker cannot fire.",
    ["kind"],
)
DEADLINES_PENDING = Gauge(
    "accord_referral_deadlines_pending",
    "Referral deadlines still running (owed, not yet due) at the worker's last pass, by kind.",
    ["kind"],
)
BREACHES_FIRED = PromCounter(
    "accord_referral_breaches_fired",
    "Referral deadline breaches fired (each once: alert, overdue flag, audit entry), by kind.",
    ["kind"],
)
REFERRALS_OVERDUE_OPEN = Gauge(
    "accord_referrals_overdue_open",
    "Open referrals flagged overdue (a deadline fell due unmet), at the worker's last pass.",
)

# --- survivor notices (accord notices) ---------------------------------------------------

NOTICES_DECIDED = PromCounter(
    "accord_survivor_notices_decided",
    "Notices to survivors decided by the notice gate, by outcome (sent, held, suppressed, "
    "withdrawn; failed: rolled back, tried again 5 minutes later).",
    ["outcome"],
)
NOTICE_ROUNDS_FAILED = PromCounter(
    "accord_survivor_notice_rounds_failed",
    "Dispatch rounds of the notice gate that failed (the database away); tried again.",
)

# --- API ----------------------------------------------------------------------------------

API_AUTH_FAILURES = PromCounter(
    "accord_api_auth_failures",
    "Requests refused 401 (a missing, bad, revoked or expired API key or enrollment code).",
)
API_RATE_LIMITED = PromCounter(
    "accord_api_rate_limited",
    "Requests refused 429 by the rate limits.",
)

# --- label values -------------------------------------------------------------------------

OUTCOMES = ("allow", "partial", "deny")
HOLD_CAUSES = ("opa_unavailable", "consents_unavailable", "database_unavailable", "kafka", "other")
_RULE = re.compile(r"R[0-9]{1,2}")


def rule_label(rule: str) -> str:
    """A rule id as a label: ``R1``…``R99``; anything else the policy might name, ``other``."""
    return rule if _RULE.fullmatch(rule) else "other"


def hold_cause(exc: BaseException) -> str:
    """The bounded cause of a held batch, from the exception that held it."""
    if isinstance(exc, Unavailable):
        return exc.cause if exc.cause in HOLD_CAUSES else "other"
    if isinstance(exc, KafkaError):
        return "kafka"
    return "other"


@dataclass
class BatchTally:
    """What one committed batch adds to the relay's counters (pure data, built per partition)."""

    relayed: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    deliveries: Counter[str] = field(default_factory=Counter)  # by partner type
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (outcome, type)
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)  # (outcome, rule)

    def decided(self, outcome: str, partner_type: str, rules: Iterable[str]) -> None:
        self.decisions[(outcome, partner_type)] += 1
        if outcome != "deny":
            self.deliveries[partner_type] += 1
        for rule in {rule_label(r) for r in rules}:
            self.rules[(outcome, rule)] += 1


def record_batch(tally: BatchTally) -> None:
    """Count one partition's committed share of a poll."""
    RELAY_EVENTS.labels("relayed").inc(tally.relayed)
    RELAY_EVENTS.labels("rejected").inc(sum(tally.dead_letters.values()))
    for code, n in tally.dead_letters.items():
        RELAY_DEAD_LETTERS.labels(code).inc(n)
    for ptype, n in tally.deliveries.items():
        RELAY_DELIVERIES.labels(ptype).inc(n)
    for (outcome, ptype), n in tally.decisions.items():
        RELAY_DECISIONS.labels(outcome, ptype).inc(n)
    for (outcome, rule), n in tally.rules.items():
        RELAY_DECISION_RULES.labels(outcome, rule).inc(n)


def record_stages(stages_ms: Mapping[str, float]) -> None:
    """The time one poll (or one partition's commit) spent per stage, from the relay's laps."""
    for stage, ms in stages_ms.items():
        RELAY_STAGE_SECONDS.labels(stage).observe(ms / 1000)


def partition_lags(
    consumer: AIOKafkaConsumer, done: Mapping[TopicPartition, int]
) -> dict[int, int]:
    """Per assigned partition with a known ``done`` offset (the next one not yet processed):
    the committed records behind it, from the last stable offset of the latest fetch. No I/O.

    A sink wires its lag as ``record_lag(SINK_LAG, partition_lags(consumer, done), "audit")``
    after each poll, and ``SINK_RECORDS.labels("audit").inc(stored)`` after each commit."""
    lags: dict[int, int] = {}
    for tp in consumer.assignment():
        end, at = consumer.last_stable_offset(tp), done.get(tp)
        if end is not None and at is not None:
            lags[tp.partition] = end - at
    return lags


def record_lag(gauge: Gauge, lags: Mapping[int, int], *labels: str) -> None:
    """Set a lag gauge per partition (``labels`` first, then the partition number); the
    partitions not in ``lags`` (no longer assigned) drop out."""
    gauge.clear()
    for partition, lag in lags.items():
        gauge.labels(*labels, str(partition)).set(max(0, lag))


# --- audit checkpointer (services/audit/checkpoints.py) ------------------------------------

AUDIT_CHECKPOINTS_SIGNED = PromCounter(
    "accord_audit_checkpoints_signed",
    "Records the checkpointer signed and witnessed (checkpoints and prunings).",
)
AUDIT_CHECKPOINT_REFUSALS = PromCounter(
    "accord_audit_checkpoint_refusals",
    "Heads the checkpointer refused to sign: they did not follow the last witnessed one.",
)
AUDIT_CHAIN_FOLLOWS = Gauge(
    "accord_audit_chain_follows",
    "1 while the database's chain follows the last witnessed checkpoint, 0 while refused.",
)
