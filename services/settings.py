"""One settings object for every Accord process, read from ``ACCORD_*`` environment variables.

``accord dev up`` writes the addresses of the stack it started to ``<state_dir>/stack.env``;
that file is read too, so the relay, the APIs and the tests find the local stack without
extra configuration. Real environment variables always win over the file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = REPO_ROOT / ".accord"


def _state_dir() -> Path:
    return Path(os.environ.get("ACCORD_STATE_DIR", DEFAULT_STATE_DIR))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ACCORD_",
        env_file=_state_dir() / "stack.env",
        extra="ignore",
    )

    # Where the local stack keeps data, logs and pid files (gitignored).
    state_dir: Path = DEFAULT_STATE_DIR
    # Downloads (Kafka jars, the opa binary) are cached here across checkouts.
    cache_dir: Path = Path.home() / ".cache" / "accord"
    policies_dir: Path = REPO_ROOT / "policies"
    schemas_dir: Path = REPO_ROOT / "schemas"

    kafka_version: str = "4.1.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_bootstrap: str = ""
    # SASL_SSL only: the CA that signed the broker's certificate (PEM) and a JSON file of
    # principal -> SCRAM password (services/kafka/client.py). Empty: the dev stack's files
    # under <state_dir>/kafka/.
    kafka_ca_file: str = ""
    kafka_credentials_file: str = Field(default="", repr=False)
    # Client quotas per principal, applied by `accord kafka provision` (0: no quota). Bytes/s
    # for an agency's writes and a partner's reads; request_percentage is the share of one
    # broker thread's time (Kafka's unit: 100 = one whole thread).
    kafka_agency_producer_byte_rate: int = Field(default=1024 * 1024, ge=0)
    kafka_agency_request_percentage: float = Field(default=50.0, ge=0)
    kafka_partner_consumer_byte_rate: int = Field(default=4 * 1024 * 1024, ge=0)
    kafka_partner_request_percentage: float = Field(default=50.0, ge=0)
    opa_version: str = "v1.22.2"
    opa_port: int = 18181
    opa_url: str = ""
    # Several OPA servers with the same policy, comma-separated base URLs, the first preferred:
    # a relay asks the next when one does not answer, and leaves that one out for
    # opa_failover_cooldown_s (docs/relay.md#several-opa-servers). Empty: opa_url alone.
    opa_urls: str = ""
    opa_failover_cooldown_s: float = Field(default=5.0, gt=0)
    postgres_port: int = 15432
    # Empty means the embedded SQLite default under state_dir.
    database_url: str = ""

    topic_inbound: str = "accord.inbound"
    topic_decisions: str = "accord.decisions"
    topic_consents: str = "accord.consent.changes"
    topic_deadletter: str = "accord.deadletter"
    topic_seen: str = "accord.relay.seen"
    partner_topic_prefix: str = "accord.partner."
    # Referrals (services/referrals/): every change of state as a CloudEvent, keyed by referral;
    # and the topics Kafka partners answer on, each written by its partner alone.
    topic_referrals: str = "accord.referrals"
    referral_reply_topic_prefix: str = "accord.replies."
    inbound_partitions: int = 3

    relay_group: str = "accord-relay"
    relay_transactional_id: str = "accord-relay-0"
    relay_max_batch: int = Field(default=500, ge=1)
    # How long the broker may hold the relay's fetch for data (Kafka's fetch.max.wait.ms;
    # aiokafka's default, 500 ms, was the relay's p99 latency: docs/relay.md#latency).
    relay_fetch_max_wait_ms: int = Field(default=10, ge=0)
    # How long a poll waits for what arrived while the previous poll was processed.
    relay_poll_top_up_ms: int = Field(default=5, ge=0)
    # How long the relay's producers wait to fill a batch (Kafka's linger.ms): 0 gave a p99
    # some 60 ms lower at half load than 5, at the same throughput (docs/relay.md#latency).
    relay_linger_ms: int = Field(default=0, ge=0)
    # Commit a poll while the next one is fetched and processed (docs/relay.md#overlap): off,
    # it made no measurable difference to throughput here and the p99 latency worse.
    relay_overlap: bool = False
    # Bounded waits: a slow or absent OPA is a deny-and-retry, never an allow (R1).
    opa_timeout_s: float = Field(default=2.0, gt=0)  # per request of opa_batch_size pairs
    opa_batch_size: int = Field(default=100, ge=1)  # (event, partner) pairs per OPA request
    opa_concurrency: int = Field(default=2, ge=1)  # OPA requests in flight per relay batch
    # "opa": ask the OPA server (the reference); "wasm": evaluate the same Rego compiled to
    # WebAssembly in the relay (docs/policy-performance.md), the server answering what it cannot.
    policy_engine: Literal["opa", "wasm"] = "opa"
    # Decisions kept for reuse until their valid_until (docs/relay.md#decision-reuse); 0: none.
    decision_reuse_entries: int = Field(default=6000, ge=0)
    relay_retry_initial_s: float = Field(default=0.2, gt=0)
    relay_retry_max_s: float = Field(default=5.0, gt=0)
    # The relay's /healthz, /readyz and /metrics (docs/operations.md). Several instances on one
    # host each need their own port: set it per instance, or 0 for any free port (logged).
    relay_health_host: str = "127.0.0.1"
    relay_health_port: int = Field(default=9101, ge=0, le=65535)

    # Events older than this (or keyed by an id already relayed within it) are refused.
    replay_window_s: int = Field(default=7 * 24 * 3600, gt=0)
    # The relay's Curve25519 private key (base64) that seals deliveries. Empty: a key kept in
    # <state_dir>/keys/relay.key, created on first use (development only).
    relay_private_key: str = Field(default="", repr=False)

    # The checkpoint signing key (services/audit/signing.py): a file of the base64 32-byte
    # Ed25519 seed that only the checkpointer's OS user can read (0400); only `accord audit
    # checkpointer` opens it. Empty: <state_dir>/keys/audit.key, made on first use (dev only).
    audit_signing_key_file: str = ""
    # The published verify key of checkpoints (hex), or a file holding it; empty: the file
    # <state_dir>/keys/audit.pub that the checkpointer publishes beside its dev key.
    audit_verify_key: str = ""
    audit_verify_key_file: str = ""
    # The appender key every audit entry is signed with (base64 seed; the audit sink, the API,
    # `accord keys erase`) and its verify key (hex). Empty: <state_dir>/keys/audit-appender.key
    # and .pub, made on first use (development only).
    audit_appender_key: str = Field(default="", repr=False)
    audit_appender_verify_key: str = ""
    # Witnessed checkpoints: a topic only the checkpointer writes (infinite retention), its
    # transactional id (a second checkpointer fences the first), and a JSON-lines copy that a
    # compliance officer can keep (empty: <state_dir>/audit/checkpoints.jsonl).
    topic_audit_checkpoints: str = "accord.audit.checkpoints"
    audit_checkpointer_transactional_id: str = "accord-checkpointer"
    audit_witness_file: str = ""
    # The checkpointer's /healthz, /readyz (503 while it refuses to sign) and /metrics.
    audit_checkpointer_health_host: str = "127.0.0.1"
    audit_checkpointer_health_port: int = Field(default=9103, ge=0, le=65535)
    # A signed checkpoint after this many new entries, or this long after the last one.
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    audit_checkpoint_interval_s: float = Field(default=60.0, gt=0)
    # Audit entries older than this many days are pruned (after a witnessed, signed pruning
    # record); 0 keeps all.
    audit_retention_days: int = Field(default=0, ge=0)
    # `accord sink` (the audit and rejection sinks): its /healthz, /readyz, /metrics (0: any
    # free port, logged at start).
    sink_health_host: str = "127.0.0.1"
    sink_health_port: int = Field(default=9102, ge=0, le=65535)
    # `accord deadlines` (referral deadlines, services/referrals/deadline_worker.py): how often it
    # looks for deadlines that fell due, and its /healthz, /readyz, /metrics (0: any free port).
    deadlines_interval_s: float = Field(default=30.0, gt=0)
    deadlines_health_host: str = "127.0.0.1"
    deadlines_health_port: int = Field(default=9104, ge=0, le=65535)
    # Tests only: a file holding the worker's "now" (RFC 3339), read at each pass, so a test
    # can move time past a deadline across a restart. Empty: the system clock.
    deadlines_clock_file: str = ""
    # `accord notices` (the notice gate's dispatcher, services/contact/worker.py): seconds
    # between rounds, and its /healthz, /readyz, /metrics (0: any free port).
    notices_interval_s: float = Field(default=30.0, gt=0)
    notices_health_host: str = "127.0.0.1"
    notices_health_port: int = Field(default=9105, ge=0, le=65535)

    # Key-encryption keys for data at rest (docs/at-rest.md): "id:base64key,id:base64key" and
    # the id new and re-wrapped data keys use (may be empty with one KEK). Empty: one key kept
    # in <state_dir>/keys/kek.key with id "dev", created on first use (development only).
    keks: str = Field(default="", repr=False)
    kek_active: str = ""

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # Behind a reverse proxy: take the client address (for the rate limits) from
    # X-Forwarded-For, only on connections from these comma-separated addresses.
    api_proxy_headers: bool = False
    api_forwarded_allow_ips: str = "127.0.0.1"
    max_event_bytes: int = 256 * 1024
    # Inbound events and consent snapshots sealed to their survivor (services/atrest/sealed.py).
    # "optional" also reads plaintext records: only while publishers move to sealing
    # (docs/at-rest.md).
    kafka_sealing: Literal["required", "optional"] = "required"
    # TLS for `accord api`: a PEM certificate (chain) and its private key; both or neither.
    api_tls_cert: str = ""
    api_tls_key: str = Field(default="", repr=False)
    # Token buckets (services/http_security.py): authentication failures per client IP and
    # per credential id, and failed POST /v1/enroll per client IP; each a minute's worth of
    # burst. Only failures are counted and refused: a valid key always passes.
    auth_failures_per_minute: int = Field(default=30, ge=1)
    enroll_per_minute: int = Field(default=10, ge=1)

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def opa_base_url(self) -> str:
        return self.opa_url or f"http://127.0.0.1:{self.opa_port}"

    @property
    def opa_base_urls(self) -> list[str]:
        """The OPA servers a relay asks, in order of preference."""
        return [u.strip() for u in self.opa_urls.split(",") if u.strip()] or [self.opa_base_url]

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'accord.db'}"

    def partner_topic(self, partner_id: str) -> str:
        return f"{self.partner_topic_prefix}{partner_id}"

    def reply_topic(self, partner_id: str) -> str:
        return f"{self.referral_reply_topic_prefix}{partner_id}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
