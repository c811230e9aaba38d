"""The AsyncAPI 3 document of Accord's Kafka topics, generated from the code so it cannot drift.

- channels: every topic of ``topics.core_topics``, the witnessed checkpoints' topic and the
  partner topics (one channel with a ``partnerId`` parameter), with the names, partitions
  and configuration the code creates them with (default settings);
- messages: what the code writes on each, described by the JSON Schemas below (``RECORDS``);
  ``tests/unit/test_asyncapi.py`` validates the records the code's own functions make against
  them (every property required, no other allowed), so a new or renamed field fails there;
  the event ``data`` schemas are ``schemas/events/*.json``, as the relay validates them;
- security: SASL_SSL with SCRAM-SHA-512, one scheme per principal; operations: who may read
  (``receive``) and write (``send``) each channel, from the ACL table
  ``services.kafka.acls.bindings``.

``accord asyncapi`` writes ``docs/asyncapi.yaml``; ``accord asyncapi --check`` (and the unit
test) fail if the committed document is not the generated one; ``make asyncapi`` validates it
with the AsyncAPI CLI (deploy/asyncapi.sh).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from services.audit.witness import witness_topic
from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.acls import bindings
from services.kafka.admin import Binding
from services.kafka.protocol import Op, Pattern, Resource
from services.settings import REPO_ROOT, Settings

JSON = dict[str, Any]
DOC_PATH = REPO_ROOT / "docs" / "asyncapi.yaml"
KAFKA_BINDING = "0.5.0"
AGENCY, PARTNER = "{agencyId}", "{partnerId}"  # placeholders of per-agency and per-partner names
_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"}
_TIME = {"type": "string", "format": "date-time"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_B64 = {"type": "string", "contentEncoding": "base64"}


def _obj(description: str, props: JSON, *, optional: tuple[str, ...] = ()) -> JSON:
    """A closed object: every property required but ``optional``, no other allowed."""
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "required": [k for k in props if k not in optional],
        "properties": props,
    }


def _nullable(schema: JSON) -> JSON:
    return {"oneOf": [schema, {"type": "null"}]}


_SEALED_TO_SURVIVOR = {
    "accordsealed": {"type": "string", "description": "the format: ib1 (event), cs1 (snapshot)"},
    "survivor": {**_ID, "description": "the survivor's pseudonymous id"},
    "generation": {"type": "integer", "description": "the survivor data key's generation"},
    "hpke": {
        "type": "string",
        "contentEncoding": "base64url",
        "description": "HPKE base mode (X25519, HKDF-SHA256, AES-256-GCM): the encapsulated "
        "key then the ciphertext; the info binds the header",
    },
}

# The records on Accord's topics, by component name. Pure data: the unit test validates what
# the code makes against each.
RECORDS: dict[str, JSON] = {
    "SealedEvent": _obj(
        "An agency's event on the inbound topic, sealed to its survivor (docs/at-rest.md); "
        "the plaintext is the SignedEvent, byte for byte.",
        {
            "accordsealed": {**_SEALED_TO_SURVIVOR["accordsealed"], "const": "ib1"},
            "agency": {"type": "string", "description": "the publishing agency's id"},
            "survivor": _SEALED_TO_SURVIVOR["survivor"],
            "generation": _SEALED_TO_SURVIVOR["generation"],
            "hpke": _SEALED_TO_SURVIVOR["hpke"],
        },
    ),
    "SignedEvent": {
        "type": "object",
        "description": "The plaintext of a SealedEvent: a CloudEvent 1.0 (structured JSON) "
        "signed by its agency (Ed25519 over the canonical event without accordsignature). "
        "data is the event type's schema (EventData...).",
        "required": ["specversion", "id", "source", "type", "subject", "time", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": _ID,
            "source": {"type": "string", "pattern": "^/agencies/[a-z0-9][a-z0-9-]{0,63}$"},
            "type": {"type": "string", "pattern": "^accord\\.[a-z_]+\\.[a-z_]+$"},
            "subject": {**_ID, "description": "the survivor's pseudonymous id"},
            "time": _TIME,
            "datacontenttype": {"const": "application/json"},
            "data": {"type": "object"},
            "accordsignature": _B64,
        },
    },
    "SealedDelivery": _obj(
        "What a partner reads: a Box (Curve25519, XSalsa20-Poly1305) from the relay's key to "
        "the partner's; it opens to a DeliveredEvent (docs/partners.md).",
        {
            "v": {"const": 1},
            "delivery_id": {"type": "string", "description": "<event id>/<partner id>"},
            "partner_id": {"type": "string"},
            "relay_key": {**_B64, "description": "the relay's Curve25519 public key"},
            "box": {**_B64, "description": "nonce and ciphertext"},
        },
    ),
    "DeliveredEvent": _obj(
        "The opened SealedDelivery: the CloudEvent with only the fields the decision released.",
        {
            "specversion": {"const": "1.0"},
            "id": _ID,
            "source": {"type": "string"},
            "type": {"type": "string"},
            "subject": _ID,
            "time": _TIME,
            "datacontenttype": {"const": "application/json"},
            "data": {"type": "object", "description": "the released fields only"},
            "accordpurpose": {"type": "string"},
            "accordbasis": _STRINGS,
            "accordobligations": {"type": "array", "items": {"type": "object"}},
            "accordpolicyrevision": {"type": "string"},
            "accorddeliveryid": {"type": "string", "description": "as in the record's header"},
            "accordpartner": {"type": "string", "description": "as in the record's header"},
        },
    ),
    "RevocationNotice": _obj(
        "accord.consent.revoked, unsealed and without personal data: written by the API to the "
        "topics of partners that received data under a consent now revoked (R3).",
        {
            "specversion": {"const": "1.0"},
            "id": {"type": "string"},
            "source": {"const": "/accord/consent"},
            "type": {"const": "accord.consent.revoked"},
            "subject": _ID,
            "time": _TIME,
            "datacontenttype": {"const": "application/json"},
            "data": _obj(
                "which consent version, and what to do",
                {
                    "consent_id": {"type": "string"},
                    "consent_version": {"type": "integer"},
                    "instruction": {"const": "stop_further_use"},
                },
            ),
        },
    ),
    "ReferralChange": _obj(
        "One committed change of a referral (accord.referral_state.<state>), written by the API "
        "once the database holds it, at least once (a repeat has the same id); keyed by "
        "referral id. The data of each state: ReferralData.<type> (schemas/referrals/).",
        {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "<referral id>.<seq>"},
            "source": {"const": "/accord/referrals"},
            "type": {"type": "string", "pattern": "^accord\\.referral_state\\.[a-z_]+$"},
            "subject": _ID,
            "time": _TIME,
            "datacontenttype": {"const": "application/json"},
            "data": {"type": "object", "description": "ReferralData.<type>"},
        },
    ),
    "ReferralReply": _obj(
        "A partner's move of a referral delivered to it (the actions and codes of POST "
        "/v1/referrals/{id}/{action}); the topic names its author.",
        {
            "referral_id": {"type": "string"},
            "action": {"enum": ["acknowledge", "accept", "decline", "complete", "close"]},
            "code": _nullable({"type": "string"}),
            "note": _nullable({"type": "string"}),
        },
    ),
    "DecisionRecord": _obj(
        "One event's decision for one subscribed partner: field names, rules and basis, never "
        "values. The relay writes them folded, one DecisionRecords per event; a record of its "
        "own is one written before folding (the audit sink reads both).",
        {
            "event_id": _ID,
            "delivery_id": _nullable({"type": "string"}),
            "event_type": {"type": "string"},
            "agency_id": {"type": "string"},
            "survivor_id": _ID,
            "partner_id": {"type": "string"},
            "partner_type": {"type": "string"},
            "purpose": {"type": "string"},
            "outcome": {"enum": ["allow", "partial", "deny"]},
            "released": _STRINGS,
            "withheld": {
                "type": "array",
                "items": _obj(
                    "a withheld field and the rules that withheld it",
                    {"field": {"type": "string"}, "rules": _STRINGS},
                ),
            },
            "field_basis": {"type": "object", "additionalProperties": {"type": "string"}},
            "basis": _STRINGS,
            "reasons": _STRINGS,
            "consents": {
                "type": "array",
                "items": _obj(
                    "a consent version the decision relied on",
                    {"id": {"type": "string"}, "version": {"type": "integer"}},
                ),
            },
            "obligations": {"type": "array", "items": {"type": "object"}},
            "review_required": {"type": "boolean"},
            "flags": _STRINGS,
            "policy_revision": {"type": "string"},
            "decided_at": _TIME,
        },
    ),
    "DeadLetter": _obj(
        "A rejected inbound record: its reason code and a description that never repeats a "
        "value, never the payload (docs/relay.md#dead-letters).",
        {
            "code": {"type": "string"},
            "detail": {"type": "string"},
            "event_id": _nullable({"type": "string"}),
            "agency_id": _nullable({"type": "string"}),
            "inbound": _obj(
                "where the rejected record is",
                {
                    "topic": {"type": "string"},
                    "partition": {"type": "integer"},
                    "offset": {"type": "integer"},
                },
            ),
        },
    ),
    "SealedSnapshot": _obj(
        "A survivor's current sharing state, sealed to the survivor (compacted: the latest per "
        "survivor); the plaintext is a ConsentSnapshot. A tombstone (null) after erasure.",
        {
            "accordsealed": {**_SEALED_TO_SURVIVOR["accordsealed"], "const": "cs1"},
            "survivor": _SEALED_TO_SURVIVOR["survivor"],
            "generation": _SEALED_TO_SURVIVOR["generation"],
            "hpke": _SEALED_TO_SURVIVOR["hpke"],
        },
    ),
    "ConsentSnapshot": _obj(
        "The plaintext of a SealedSnapshot: what the policy reads about the survivor (R3).",
        {
            "survivor_id": _ID,
            "seq": {"type": "integer", "description": "increases with every change"},
            "consents": {"type": "array", "items": {"type": "object"}},
            "declarations": {"type": "array", "items": {"type": "object"}},
            "court_orders": {"type": "array", "items": {"type": "object"}},
        },
    ),
    "SeenEvent": _obj(
        "The relay's replay guard: an event relayed within the replay window (compacted, "
        "expiring), keyed <agency id>/<event id>.",
        {"time": {**_TIME, "description": "the event's time"}},
    ),
    "Checkpoint": _obj(
        "A witnessed audit checkpoint (a signed head of the audit chain) or a signed pruning "
        "(kind prune, with retention_days and before); written by the checkpointer alone "
        "(docs/audit.md#witnessed-checkpoints).",
        {
            "kind": {"enum": ["checkpoint", "prune"]},
            "seq": {"type": "integer"},
            "head": {"type": "string", "description": "the hash of entry seq (hex)"},
            "count": {"type": "integer"},
            "at": _TIME,
            "prev": {"type": "string", "description": "the hash of the previous record (hex)"},
            "key_id": {"type": "string"},
            "signature": {"type": "string", "description": "Ed25519 (hex)"},
            "retention_days": {"type": "integer"},
            "before": _TIME,
        },
        optional=("retention_days", "before"),
    ),
}
RECORDS["DecisionRecords"] = _obj(
    "One per event, in the relay's transaction: every subscribed partner's DecisionRecord "
    "(the audit sink chains each as its own entry; services/decision_records.py).",
    {
        "event_id": _ID,
        "decisions": {"type": "array", "items": copy.deepcopy(RECORDS["DecisionRecord"])},
    },
)

# Channel id → (its topic, what it is, key, the messages on it).
_KEY_SURVIVOR = "the survivor's pseudonymous id"
CHANNELS: dict[str, tuple[str, str, str, list[str]]] = {
    "inbound": ("topic_inbound", "Agencies' events, each sealed to its survivor.", _KEY_SURVIVOR,
                ["SealedEvent"]),
    "partner": ("partner_topic_prefix", "What one partner may receive, sealed to it; and the "
                "revocation notices; the delivery, withdrawal and expiry of its referrals (no "
                "supersedes).", _KEY_SURVIVOR,
                ["SealedDelivery", "RevocationNotice", "PartnerReferralChange"]),
    "decisions": ("topic_decisions", "The decision records (the audit sink's input).",
                  _KEY_SURVIVOR, ["DecisionRecords", "DecisionRecord"]),
    "deadletter": ("topic_deadletter", "Rejected inbound records (the rejection sink's input).",
                   "the claimed agency id, or unknown", ["DeadLetter"]),
    "consentChanges": ("topic_consents", "Each survivor's current sharing state.",
                       _KEY_SURVIVOR, ["SealedSnapshot"]),
    "relaySeen": ("topic_seen", "The relay's replay guard.", "<agency id>/<event id>",
                  ["SeenEvent"]),
    "auditCheckpoints": ("topic_audit_checkpoints", "Witnessed audit checkpoints (one "
                         "partition, infinite retention).", "none", ["Checkpoint"]),
    "referrals": ("topic_referrals", "Every committed change of every referral.",
                  "the referral id", ["ReferralChange"]),
    "referralReplies": ("referral_reply_topic_prefix", "What one partner replies to the "
                        "referrals it received (it alone writes its topic).", "the referral id",
                        ["ReferralReply"]),
}  # fmt: skip

# Per-partner channels: their address is the prefix and the partnerId parameter.
_PER_PARTNER = {"partner": "partner_topic_prefix", "referralReplies": "referral_reply_topic_prefix"}

RECORDS["PartnerReferralChange"] = {
    **RECORDS["ReferralChange"],
    "description": "The addressed partner's copy of a referral's delivery, withdrawal or expiry "
    "(a ReferralChange without data.supersedes), unsealed like the revocation notices (ids and "
    "codes only); keyed by the survivor's pseudonymous id.",
}

# Plaintexts a channel's records open to (documented beside the message).
_OPENS_TO = {
    "SealedEvent": "SignedEvent",
    "SealedDelivery": "DeliveredEvent",
    "SealedSnapshot": "ConsentSnapshot",
}


def defaults() -> Settings:
    """The settings' defaults, whatever the environment and ``stack.env`` say."""
    return Settings.model_construct()


def _addresses(s: Settings) -> dict[str, str]:
    return {
        cid: (getattr(s, attr) + PARTNER if cid in _PER_PARTNER else getattr(s, attr))
        for cid, (attr, *_rest) in CHANNELS.items()
    }


def _topic_binding(s: Settings, address: str) -> JSON:
    created = {t.name: t for t in [*topics.core_topics(s), witness_topic(s)]}
    created.update({t.name: t for t in topics.partner_topics(s, [PARTNER])})
    created[s.topic_referrals] = topics.referrals_topic(s)
    created.update({t.name: t for t in topics.reply_topics(s, [PARTNER])})
    t = created[address]
    binding: JSON = {"topic": address, "partitions": t.num_partitions, "replicas": 1}
    configs = dict(t.topic_configs or {})
    topic_configuration: JSON = {}
    if "cleanup.policy" in configs:
        topic_configuration["cleanup.policy"] = configs["cleanup.policy"].split(",")
    if "retention.ms" in configs:
        topic_configuration["retention.ms"] = int(configs["retention.ms"])
    if topic_configuration:
        binding["topicConfiguration"] = topic_configuration
    binding["bindingVersion"] = KAFKA_BINDING
    return binding


def _channel_of(b: Binding, addresses: dict[str, str], s: Settings) -> str | None:
    """The channel a topic grant is about (the partner prefix: the partner channel)."""
    if b.resource is not Resource.TOPIC:
        return None
    if b.pattern is Pattern.PREFIXED:
        return next((c for c, attr in _PER_PARTNER.items() if getattr(s, attr) == b.name), None)
    return next((cid for cid, address in addresses.items() if address == b.name), None)


def grants(s: Settings) -> Iterator[tuple[str, str, str]]:
    """(principal, channel id, send or receive) for every READ and WRITE topic grant."""
    addresses = _addresses(s)
    seen: set[tuple[str, str, str]] = set()
    for b in bindings(s, agencies=[AGENCY], partners=[PARTNER]):
        channel = _channel_of(b, addresses, s)
        if channel is None or b.op not in (Op.READ, Op.WRITE):
            continue
        grant = (b.principal, channel, "receive" if b.op is Op.READ else "send")
        if grant not in seen:
            seen.add(grant)
            yield grant


def _scheme_id(principal: str) -> str:
    return principal.replace("{", "").replace("}", "").replace(".", "-")


def _security_schemes(s: Settings) -> JSON:
    groups: dict[str, list[str]] = {}
    ids: dict[str, list[str]] = {}
    principals: list[str] = []
    for b in bindings(s, agencies=[AGENCY], partners=[PARTNER]):
        if b.principal not in principals:
            principals.append(b.principal)
        name = b.name + ("*" if b.pattern is Pattern.PREFIXED else "")
        if b.resource is Resource.GROUP and b.op is Op.READ:
            groups.setdefault(b.principal, []).append(name)
        if b.resource is Resource.TRANSACTIONAL_ID and b.op is Op.WRITE:
            ids.setdefault(b.principal, []).append(name)
    schemes: JSON = {}
    for p in principals:
        text = f"SASL/SCRAM-SHA-512 over TLS (SASL_SSL) as the principal `{p}`."
        if p in groups:
            text += f" Consumer groups: {', '.join(f'`{g}`' for g in groups[p])}."
        if p in ids:
            text += f" Transactional ids: {', '.join(f'`{i}`' for i in ids[p])}."
        schemes[_scheme_id(p)] = {"type": "scramSha512", "description": text}
    schemes[_scheme_id(kafka_client.ADMIN)] = {
        "type": "scramSha512",
        "description": f"The super user `{kafka_client.ADMIN}`: provisioning and the "
        "operator's tools only, never an Accord process.",
    }
    return schemes


def _event_schemas(s: Settings) -> dict[str, JSON]:
    out = {}
    for path in sorted((s.schemas_dir / "events").glob("*.json")):
        schema = json.loads(path.read_text())
        schema.pop("$schema", None)
        schema.pop("$id", None)
        schema["description"] = (
            f"{schema.get('description', '')} From schemas/events/{path.name}.".strip()
        )
        out["EventData." + path.stem] = schema
    for path in sorted((s.schemas_dir / "referrals").glob("*.json")):
        schema = json.loads(path.read_text())
        schema.pop("$schema", None)
        schema.pop("$id", None)
        schema["description"] = (
            f"{schema.get('description', '')} From schemas/referrals/{path.name}.".strip()
        )
        out["ReferralData." + path.stem] = schema
    return out


def _message(name: str, key: str) -> JSON:
    msg: JSON = {
        "name": name,
        "title": name,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{name}"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": key},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }
    if name in _OPENS_TO:
        msg["description"] = f"Opens to a {_OPENS_TO[name]} (components/schemas)."
    return msg


def document(s: Settings | None = None) -> JSON:
    s = s or defaults()
    addresses = _addresses(s)
    channels: JSON = {}
    messages: JSON = {}
    for cid, (_attr, what, key, names) in CHANNELS.items():
        channel: JSON = {
            "address": addresses[cid],
            "description": what,
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {"kafka": _topic_binding(s, addresses[cid])},
        }
        if cid in _PER_PARTNER:
            channel["parameters"] = {"partnerId": {"description": "the partner's id"}}
        channels[cid] = channel
        for n in names:
            messages[n] = _message(n, key)
    operations: JSON = {}
    for principal, cid, action in grants(s):
        op_id = f"{_scheme_id(principal)}-{action}s-{cid}"
        operations[op_id] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"{principal} may {'write to' if action == 'send' else 'read'} "
            f"{addresses[cid]} (ACL)",
            "security": [{"$ref": f"#/components/securitySchemes/{_scheme_id(principal)}"}],
        }
    schemes = _security_schemes(s)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Accord",
            "version": version("accord"),
            "description": "Kafka topics of Accord, the consent-governed case-event relay. "
            "Generated by `accord asyncapi` from the code's topic definitions, record schemas "
            "and ACL table (services/asyncapi.py); do not edit by hand. Topic names are the "
            "defaults (ACCORD_TOPIC_*); {agencyId} and {partnerId} stand for registered ids.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka-secure",
                "description": "SASL_SSL only: TLS with the broker's certificate checked "
                "against ACCORD_KAFKA_CA_FILE, SCRAM-SHA-512, ACLs decide everything "
                "(allow.everyone.if.no.acl.found=false).",
                "variables": {
                    "bootstrap": {
                        "default": s.bootstrap_servers,
                        "description": "host:port of a broker (ACCORD_KAFKA_BOOTSTRAP)",
                    }
                },
                "security": [{"$ref": f"#/components/securitySchemes/{k}"} for k in schemes],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {**RECORDS, **_event_schemas(s)},
            "messages": messages,
            "securitySchemes": schemes,
        },
    }


def render(doc: JSON | None = None) -> str:
    body: str = yaml.safe_dump(doc or document(), sort_keys=False, allow_unicode=True, width=100)
    return "# Generated by `accord asyncapi` (services/asyncapi.py): do not edit.\n" + body


def write(path: Path = DOC_PATH) -> bool:
    """Write the document; True if it changed."""
    text = render()
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def stale(path: Path = DOC_PATH) -> bool:
    """True if ``path`` is not the generated document."""
    return not path.exists() or path.read_text() != render()
