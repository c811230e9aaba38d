"""What each Kafka principal may do, as one table: ``bindings`` (its ACLs) and ``quotas`` (its
client quotas). Least privilege, derived from the settings' topic and group names, so a
deployment (or a test session) with its own names gets its own grants. The workflows that apply
them are ``services/kafka/provisioning.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.kafka import client as kafka_client
from services.kafka.admin import Binding
from services.kafka.client import API, AUDIT, CHECKPOINTER, FEED_GROUP_PREFIX, REFERRALS, RELAY
from services.kafka.protocol import Op, Pattern, Resource
from services.settings import Settings

CLUSTER = "kafka-cluster"


PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"


def quotas(
    s: Settings, *, agencies: Iterable[str], partners: Iterable[str]
) -> dict[str, dict[str, float | None]]:
    """The quotas of agency and partner principals (a setting of 0: none, removed): an agency
    cannot flood inbound, a partner cannot starve the broker by re-reading its topic."""

    def value(v: float) -> float | None:
        return float(v) if v > 0 else None

    out: dict[str, dict[str, float | None]] = {}
    for a in agencies:
        out[kafka_client.agency(a)] = {
            PRODUCER_BYTE_RATE: value(s.kafka_agency_producer_byte_rate),
            REQUEST_PERCENTAGE: value(s.kafka_agency_request_percentage),
        }
    for p in partners:
        out[kafka_client.partner(p)] = {
            CONSUMER_BYTE_RATE: value(s.kafka_partner_consumer_byte_rate),
            REQUEST_PERCENTAGE: value(s.kafka_partner_request_percentage),
        }
    return out


def _topic(
    principal: str, name: str, *ops: Op, pattern: Pattern = Pattern.LITERAL
) -> list[Binding]:
    # DESCRIBE comes with every other topic operation in Kafka; granted for clarity.
    return [Binding(principal, Resource.TOPIC, name, op, pattern) for op in (*ops, Op.DESCRIBE)]


def _group(principal: str, name: str, pattern: Pattern = Pattern.LITERAL) -> list[Binding]:
    return [
        Binding(principal, Resource.GROUP, name, Op.READ, pattern),
        Binding(principal, Resource.GROUP, name, Op.DESCRIBE, pattern),
    ]


def partner_group_prefix(s: Settings, partner_id: str) -> str:
    """A partner's consumer groups are named ``<its topic>.<anything>``, and only its own."""
    return f"{s.partner_topic(partner_id)}."


def bindings(s: Settings, *, agencies: Iterable[str], partners: Iterable[str]) -> list[Binding]:
    """Every grant, by principal. The super user (``ADMIN``) needs none."""
    core = (s.topic_inbound, s.topic_decisions, s.topic_deadletter, s.topic_consents, s.topic_seen)
    prefix = Pattern.PREFIXED
    grants: list[Binding] = [
        # The relay: reads inbound (its group), the consent snapshots and its replay guard;
        # writes deliveries, decision records, dead letters and the replay guard, in
        # transactions of its own transactional ids; creates the topics it needs.
        *_topic(RELAY, s.topic_inbound, Op.READ),
        *_topic(RELAY, s.topic_consents, Op.READ),
        *_topic(RELAY, s.topic_seen, Op.READ, Op.WRITE),
        *_topic(RELAY, s.topic_decisions, Op.WRITE),
        *_topic(RELAY, s.topic_deadletter, Op.WRITE),
        *_topic(RELAY, s.partner_topic_prefix, Op.WRITE, Op.CREATE, pattern=prefix),
        *[b for t in core for b in _topic(RELAY, t, Op.CREATE)],
        *_group(RELAY, s.relay_group),
        Binding(RELAY, Resource.TRANSACTIONAL_ID, s.relay_transactional_id, Op.WRITE, prefix),
        Binding(RELAY, Resource.TRANSACTIONAL_ID, s.relay_transactional_id, Op.DESCRIBE, prefix),
        Binding(RELAY, Resource.CLUSTER, CLUSTER, Op.IDEMPOTENT_WRITE),
        # The API: HTTP ingest writes inbound; the consent publisher writes snapshots;
        # registering a partner creates its topic; the HTTP feed reads partner topics with
        # one group per partner; a revocation writes the unsealed `consent.revoked` notices
        # (no personal data) to the topics of earlier recipients (services/consent/notices.py):
        # the one writer of partner topics besides the relay, and it cannot seal (no relay
        # key). Before that it waits until the audit sink has stored every decision so far:
        # it may describe the decision topic and the sink's group (offsets), not read them.
        *_topic(API, s.topic_inbound, Op.WRITE),
        *_topic(API, s.topic_consents, Op.WRITE),
        Binding(API, Resource.TOPIC, s.topic_decisions, Op.DESCRIBE),
        Binding(API, Resource.GROUP, f"{s.relay_group}-audit", Op.DESCRIBE),
        *_topic(API, s.partner_topic_prefix, Op.READ, Op.WRITE, Op.CREATE, pattern=prefix),
        *_group(API, FEED_GROUP_PREFIX, prefix),
        Binding(API, Resource.CLUSTER, CLUSTER, Op.IDEMPOTENT_WRITE),
        # Referrals (services/referrals/publish.py): each change's CloudEvent on the referrals
        # topic (the API creates it); a withdrawal or expiry also on the partner's topic (above).
        *_topic(API, s.topic_referrals, Op.WRITE, Op.CREATE),
        # The sink worker (`accord sink`): the decision records (the audit sink; its groups by
        # prefix, so a second sink can re-read the topic from the start under a group of its
        # own) and the dead letters (the rejection sink), nothing else.
        *_topic(AUDIT, s.topic_decisions, Op.READ),
        *_group(AUDIT, f"{s.relay_group}-audit", prefix),
        *_topic(AUDIT, s.topic_deadletter, Op.READ),
        *_group(AUDIT, f"{s.relay_group}-rejections"),
        # Witnessed audit checkpoints (services/audit/witness.py): the checkpointer alone
        # writes them, in transactions of its one transactional id (a second instance fences
        # the first); the API and `accord audit verify` (as the audit principal) read them,
        # without a group. No one else may write: the database's users cannot rewrite them.
        *_topic(CHECKPOINTER, s.topic_audit_checkpoints, Op.READ, Op.WRITE, Op.CREATE),
        Binding(
            CHECKPOINTER,
            Resource.TRANSACTIONAL_ID,
            s.audit_checkpointer_transactional_id,
            Op.WRITE,
        ),
        Binding(
            CHECKPOINTER,
            Resource.TRANSACTIONAL_ID,
            s.audit_checkpointer_transactional_id,
            Op.DESCRIBE,
        ),
        Binding(CHECKPOINTER, Resource.CLUSTER, CLUSTER, Op.IDEMPOTENT_WRITE),
        *_topic(API, s.topic_audit_checkpoints, Op.READ),
        *_topic(AUDIT, s.topic_audit_checkpoints, Op.READ),
        # Referral replies (services/referrals/replies.py): each partner writes its own reply
        # topic (below); the reply reader reads them all, with one group, and writes nothing.
        *_topic(REFERRALS, s.referral_reply_topic_prefix, Op.READ, pattern=prefix),
        *_group(REFERRALS, f"{s.relay_group}-referral-replies"),
    ]
    for a in agencies:
        grants += _topic(kafka_client.agency(a), s.topic_inbound, Op.WRITE)
    for p in partners:
        principal = kafka_client.partner(p)
        grants += _topic(principal, s.partner_topic(p), Op.READ)
        grants += _group(principal, partner_group_prefix(s, p), prefix)
        grants += _topic(principal, s.reply_topic(p), Op.WRITE)  # its replies: only its own
    return grants
