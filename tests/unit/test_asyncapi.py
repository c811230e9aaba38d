"""docs/asyncapi.yaml is generated from the code (services/asyncapi.py) and stays so: the
committed document is the generated one, every topic the code creates or grants is a channel,
and the records the code's own functions write validate against the document's schemas, which
require every property and allow no other (a new, renamed or removed field fails here).
`make asyncapi` validates the document with the AsyncAPI CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from jsonschema import Draft7Validator, FormatChecker
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from services import asyncapi
from services.atrest import sealed
from services.audit.chain import sign_checkpoint
from services.audit.witness import witness_topic
from services.broker.pipeline import deliver
from services.broker.pipeline.decide import parse_decision
from services.broker.pipeline.model import Judged, Rejection
from services.broker.pipeline.project import projected
from services.broker.pipeline.seal import (
    Sealer,
    delivery_id,
    open_delivery,
    public_key_of,
    sealed_pair,
)
from services.broker.replay import seen_record
from services.consent.notices import notice
from services.consent.schemas import Consent
from services.decision_records import split_decisions
from services.events.provenance import sign_event
from services.kafka import topics
from services.kafka.acls import bindings
from services.kafka.protocol import Op, Resource
from services.kafka.provisioning import FIXED
from services.referrals import events as referral_events
from services.referrals.models import Referral, ReferralChange
from services.snapshot.build import Snapshot
from services.snapshot.publisher import encode
from tests.support.pipeline import NOW, make_event, make_recipient

DOC = asyncapi.document()
SCHEMAS = DOC["components"]["schemas"]


def valid(name: str, record: Any) -> None:
    """``record`` (bytes of JSON, or a value) is an instance of the component schema ``name``."""
    value = json.loads(record) if isinstance(record, bytes | str) else record
    errors = [e.message for e in Draft7Validator(SCHEMAS[name], format_checker=FormatChecker())
              .iter_errors(value)]  # fmt: skip
    assert not errors, (name, errors)


def test_the_committed_document_is_the_generated_one() -> None:
    assert not asyncapi.stale(), "docs/asyncapi.yaml is out of date: run .venv/bin/accord asyncapi"
    assert yaml.safe_load(asyncapi.DOC_PATH.read_text()) == DOC


def test_every_topic_the_code_creates_is_a_channel() -> None:
    s = asyncapi.defaults()
    created = [t.name for t in topics.core_topics(s)] + [witness_topic(s).name]
    created += [t.name for t in topics.partner_topics(s, [asyncapi.PARTNER])]
    created += [topics.referrals_topic(s).name]
    created += [t.name for t in topics.reply_topics(s, [asyncapi.PARTNER])]
    addresses = {c["address"] for c in DOC["channels"].values()}
    assert set(created) == addresses
    assert DOC["channels"]["inbound"]["bindings"]["kafka"]["partitions"] == s.inbound_partitions


def test_every_topic_grant_is_an_operation_of_its_principal() -> None:
    s = asyncapi.defaults()
    ops = {
        (op["security"][0]["$ref"].rsplit("/", 1)[1], op["channel"]["$ref"].rsplit("/", 1)[1],
         op["action"])
        for op in DOC["operations"].values()
    }  # fmt: skip
    granted = [
        b
        for b in bindings(s, agencies=[asyncapi.AGENCY], partners=[asyncapi.PARTNER])
        if b.resource is Resource.TOPIC and b.op in (Op.READ, Op.WRITE)
    ]
    assert granted
    for b in granted:
        channel = asyncapi._channel_of(b, asyncapi._addresses(s), s)
        assert channel is not None, f"{b.name}: a topic someone may use is not a channel"
        action = "receive" if b.op is Op.READ else "send"
        assert (asyncapi._scheme_id(b.principal), channel, action) in ops
    # Least privilege, as the document states it: only the relay writes deliveries and
    # decisions, only the audit principal reads decisions, only the checkpointer writes
    # checkpoints, an agency only writes inbound.
    assert {(p, a) for p, c, a in ops if c == "decisions"} == {
        ("accord-relay", "send"),
        ("accord-audit", "receive"),
    }
    assert {p for p, c, a in ops if c == "auditCheckpoints" and a == "send"} == {
        "accord-checkpointer"
    }
    assert {(c, a) for p, c, a in ops if p == "agency-agencyId"} == {("inbound", "send")}
    schemes = DOC["components"]["securitySchemes"]
    assert all(asyncapi._scheme_id(p) in schemes for p in FIXED)
    assert {v["type"] for v in schemes.values()} == {"scramSha512"}


def test_event_data_schemas_are_the_relays() -> None:
    s = asyncapi.defaults()
    for path in (s.schemas_dir / "events").glob("*.json"):
        mine = SCHEMAS[f"EventData.{path.stem}"]
        theirs = json.loads(path.read_text())
        assert mine["properties"] == theirs["properties"]
        assert mine.get("required") == theirs.get("required")


def _judged(raw: dict[str, Any]) -> Judged:
    event = make_event()
    return Judged(event, make_recipient(), parse_decision(raw, event_fields=list(event.data)))


ALLOW = {
    "allow": True,
    "fields": ["age"],
    "withheld": [{"field": "hiv_status", "rules": ["R6"]}],
    "basis": ["consent"],
    "reasons": ["R2"],
    "consents": [{"id": "c-1", "version": 2}],
    "obligations": [{"kind": "no_onward_sharing"}],
    "review_required": False,
    "policy_revision": "rev-1",
    "field_basis": {"age": "consent"},
    "flags": [],
}


@pytest.mark.parametrize("raw", [ALLOW, {"allow": False}], ids=["allow", "deny"])
def test_relay_records_match_their_schemas(raw: dict[str, Any]) -> None:
    judged = _judged(raw)
    partner_key, relay_key = PrivateKey.generate(), PrivateKey.generate()
    sealer = Sealer(relay_key)
    recipient = replace(make_recipient(), public_key=public_key_of(partner_key))
    out = deliver.records(
        [sealed_pair(projected(Judged(judged.event, recipient, judged.decision)), sealer)],
        decided_at=NOW,
        decisions_topic="accord.decisions",
        partner_topic_prefix="accord.partner.",
    )
    by_topic = {r.topic: r.value for r in out}
    valid("DecisionRecords", by_topic["accord.decisions"])
    for record in split_decisions(json.loads(by_topic["accord.decisions"])):
        valid("DecisionRecord", record)
    if raw["allow"]:
        delivery = by_topic["accord.partner.shelter-1"]
        valid("SealedDelivery", delivery)
        opened = open_delivery(
            delivery,
            partner_id="shelter-1",
            partner_key=partner_key,
            relay_key=public_key_of(relay_key),
        )
        assert opened.delivery_id == delivery_id("evt-1", "shelter-1")
        valid("DeliveredEvent", opened.event)
    else:
        assert set(by_topic) == {"accord.decisions"}


@pytest.mark.parametrize(
    "rejection",
    [Rejection("schema", "age: not an integer", "evt-1", "harbor"), Rejection("unreadable", "x")],
)
def test_dead_letters_match_their_schema(rejection: Rejection) -> None:
    record = deliver.dead_letter_record(
        rejection, deadletter_topic="accord.deadletter", topic="accord.inbound", partition=1,
        offset=7,
    )  # fmt: skip
    valid("DeadLetter", record.value)


def test_sealed_events_and_snapshots_match_their_schemas() -> None:
    public = X25519PrivateKey.generate().public_key().public_bytes_raw()
    agency_key = SigningKey.generate()
    event = sign_event(
        {
            "specversion": "1.0",
            "id": "evt-1",
            "source": "/agencies/harbor",
            "type": "accord.referral.made",
            "subject": "sv-1",
            "time": "2026-03-02T10:15:00Z",
            "datacontenttype": "application/json",
            "data": {"age": 30},
        },
        agency_key,
    )
    valid("SignedEvent", event)
    plaintext = json.dumps(event).encode()
    valid("SealedEvent", sealed.seal(plaintext, sealed.event_header("harbor", "sv-1", 1),
                                     public_key=public))  # fmt: skip
    snapshot = encode(Snapshot("sv-1", 3, [{"id": "c-1"}], [{"id": "d-1"}], []))
    valid("ConsentSnapshot", snapshot)
    valid("SealedSnapshot", sealed.seal(snapshot, sealed.snapshot_header("sv-1", 1),
                                        public_key=public))  # fmt: skip


def test_the_other_records_match_their_schemas() -> None:
    _key, value = seen_record("harbor/evt-1", NOW)
    valid("SeenEvent", value)
    consent = cast(Consent, SimpleNamespace(id="c-1", version=2, survivor_id="sv-1"))
    valid("RevocationNotice", notice(consent, "shelter-1", NOW))

    class Key:
        key = SigningKey.generate()
        key_id = "k1"
        verify_key = key.verify_key

        def sign(self, payload: bytes) -> bytes:
            return bytes(self.key.sign(payload).signature)

    at = datetime(2026, 3, 1, tzinfo=UTC).isoformat()
    head = sign_checkpoint(Key(), seq=9, head="ab", count=10, at=at, prev="00")
    valid("Checkpoint", head.to_json())
    prune = sign_checkpoint(
        Key(), seq=4, head="cd", count=10, at=at, prev="ef", kind="prune", retention_days=30,
        before=at,
    )  # fmt: skip
    valid("Checkpoint", prune.to_json())


def test_a_record_with_a_field_more_or_less_fails() -> None:
    record = json.loads(deliver.dead_letter_record(
        Rejection("schema", "x"), deadletter_topic="d", topic="t", partition=0, offset=0
    ).value)  # fmt: skip
    errors = Draft7Validator(SCHEMAS["DeadLetter"]).iter_errors
    assert list(errors({**record, "payload": "leak"}))
    assert list(errors({k: v for k, v in record.items() if k != "code"}))


def test_referral_records_match_their_schemas() -> None:
    referral = cast(Referral, SimpleNamespace(
        id="ref-0123456789abcdef", event_id="evt-1", agency_id="harbor", partner_id="shelter-1",
        partner_type="shelter", purpose="service_referral", supersedes=None,
        survivor_id="sv-1", refused_rules=[], released=["service_needs"],
    ))  # fmt: skip
    change = cast(ReferralChange, SimpleNamespace(
        target="delivered", source="made", action="deliver", seq=2, code=None, at=NOW,
    ))  # fmt: skip
    doc = referral_events.cloudevent(referral, change)
    valid("ReferralChange", referral_events.encode(doc))
    valid("PartnerReferralChange", referral_events.encode(referral_events.for_partner(doc)))
    valid(f"ReferralData.{doc['type']}", doc["data"])
    valid("ReferralReply", {"referral_id": referral.id, "action": "accept", "code": None,
                            "note": None})  # fmt: skip
    assert list(Draft7Validator(SCHEMAS["ReferralReply"]).iter_errors(
        {"referral_id": referral.id, "action": "withdraw", "code": None, "note": None}
    ))  # fmt: skip
