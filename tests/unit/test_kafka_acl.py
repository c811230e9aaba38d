"""The ACL table of services/kafka/acls.py, read as a whole: who may write and read each topic.
(tests/integration/test_kafka_security.py shows the broker enforcing it.)"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from aiokafka.protocol.admin import DeleteAclsRequest_v1

from services.kafka import client as kafka_client
from services.kafka.acls import (
    CONSUMER_BYTE_RATE,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    bindings,
    quotas,
)
from services.kafka.admin import Binding, acls_under, principal_filter, upsertion
from services.kafka.client import API, AUDIT, CHECKPOINTER, REFERRALS, RELAY
from services.kafka.protocol import (
    ANY,
    AclFilter,
    AlterClientQuotasRequest,
    AlterClientQuotasRequest_v0,
    AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsRequest_v0,
    DeleteAclsRequest,
    Op,
    Pattern,
    QuotaEntity,
    QuotaOp,
    Resource,
)
from services.settings import Settings

S = Settings(state_dir=Path("/nonexistent"))
GRANTS = bindings(S, agencies=["ag-a", "ag-b"], partners=["pa", "pb"])


def who(op: Op, topic: str) -> set[str]:
    """The principals granted ``op`` on ``topic`` (by a literal or a matching prefix)."""
    return {
        b.principal
        for b in GRANTS
        if b.resource is Resource.TOPIC
        and b.op is op
        and (b.name == topic if b.pattern is Pattern.LITERAL else topic.startswith(b.name))
    }


def test_who_writes_and_reads_each_topic() -> None:
    agencies = {kafka_client.agency("ag-a"), kafka_client.agency("ag-b")}
    assert who(Op.WRITE, S.topic_inbound) == agencies | {API}
    assert who(Op.READ, S.topic_inbound) == {RELAY}
    assert who(Op.WRITE, S.topic_decisions) == {RELAY}
    assert who(Op.READ, S.topic_decisions) == {AUDIT}
    assert who(Op.WRITE, S.topic_consents) == {API}
    assert who(Op.READ, S.topic_consents) == {RELAY}
    assert who(Op.WRITE, S.topic_deadletter) == {RELAY}
    assert who(Op.READ, S.topic_deadletter) == {AUDIT}  # the sink worker
    # Deliveries from the relay; unsealed consent.revoked notices from the API.
    assert who(Op.WRITE, S.partner_topic("pa")) == {RELAY, API}
    # The partner itself, and the API that serves its HTTP feed.
    assert who(Op.READ, S.partner_topic("pa")) == {kafka_client.partner("pa"), API}
    # The witnessed audit checkpoints: the checkpointer alone writes; verifiers read.
    assert who(Op.WRITE, S.topic_audit_checkpoints) == {CHECKPOINTER}
    assert who(Op.READ, S.topic_audit_checkpoints) == {CHECKPOINTER, API, AUDIT}
    assert {b.principal for b in GRANTS if b.name == S.topic_audit_checkpoints} == {
        CHECKPOINTER,
        API,
        AUDIT,
    }


def test_agencies_and_partners_get_nothing_beyond_their_own() -> None:
    for b in GRANTS:
        if b.principal.startswith("partner."):
            pid = b.principal.removeprefix("partner.")
            if b.name == S.reply_topic(pid):  # its referral replies: write its own topic only
                assert (b.resource, b.pattern) == (Resource.TOPIC, Pattern.LITERAL), b
                assert b.op in (Op.WRITE, Op.DESCRIBE), b
                continue
            assert b.name.startswith(S.partner_topic(pid)), b
            assert b.op in (Op.READ, Op.DESCRIBE), b
        if b.principal.startswith("agency."):
            assert (b.resource, b.name) == (Resource.TOPIC, S.topic_inbound), b
            assert b.op in (Op.WRITE, Op.DESCRIBE), b


def test_a_reply_topic_is_written_by_its_partner_alone_and_read_by_the_reply_reader() -> None:
    for topic in {S.reply_topic(p) for p in ("pa", "pb")}:
        writers = {
            b.principal
            for b in GRANTS
            if b.resource is Resource.TOPIC
            and b.op in (Op.WRITE, Op.CREATE)
            and (b.name == topic or (b.pattern is Pattern.PREFIXED and topic.startswith(b.name)))
        }
        assert writers == {f"partner.{topic.removeprefix(S.referral_reply_topic_prefix)}"}
    assert Binding(
        REFERRALS, Resource.TOPIC, S.referral_reply_topic_prefix, Op.READ, Pattern.PREFIXED
    ) in set(GRANTS)
    assert not [b for b in GRANTS if b.principal == REFERRALS and b.op is Op.WRITE]


def test_only_the_relay_and_the_checkpointer_hold_transactional_ids() -> None:
    held = {
        (b.principal, b.name, b.pattern) for b in GRANTS if b.resource is Resource.TRANSACTIONAL_ID
    }
    assert {p for p, _, _ in held} == {RELAY, CHECKPOINTER}
    # the checkpointer's one id, literally: two checkpointers share it and fence each other
    assert {(n, pat) for p, n, pat in held if p == CHECKPOINTER} == {
        (S.audit_checkpointer_transactional_id, Pattern.LITERAL)
    }
    assert Binding(
        RELAY, Resource.TRANSACTIONAL_ID, S.relay_transactional_id, Op.WRITE, Pattern.PREFIXED
    ) in set(GRANTS)


def test_scram_credential_is_pbkdf2_of_the_password() -> None:
    name, mechanism, iterations, salt, salted = upsertion("u", "secret")[:5]
    assert (name, mechanism) == ("u", 2)
    assert salted == hashlib.pbkdf2_hmac("sha512", b"secret", salt, iterations)
    assert b"secret" not in salted + salt


def test_generated_passwords_are_private_and_kept(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    first = kafka_client.ensure_passwords(s, ["p1"])
    again = kafka_client.ensure_passwords(s, ["p1", "p2"])
    assert again["p1"] == first["p1"] and again["p1"] != again["p2"]
    path = kafka_client.credentials_path(s)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == again
    assert again["p1"] not in repr(kafka_client.kafka(s, "p1"))


# --- revocation, quotas, cleanup: the requests as built (the broker's answers are in
# tests/integration/test_kafka_revoke.py) ---------------------------------------------------------


def test_a_revocation_filter_matches_every_acl_of_that_principal_and_only_it() -> None:
    f = principal_filter("partner.pa")
    assert f == (ANY, None, ANY, "User:partner.pa", None, ANY, ANY)
    # Encoded as Kafka reads it: null name and host (any), the principal exact.
    wire = DeleteAclsRequest([f]).build(DeleteAclsRequest_v1)
    assert DeleteAclsRequest_v1.decode(wire.encode()).filters == [f]


def test_credential_deletion_is_sent_as_deletions_only() -> None:
    wire = AlterUserScramCredentialsRequest([], deletions=["partner.pa"]).build(
        AlterUserScramCredentialsRequest_v0
    )
    decoded = AlterUserScramCredentialsRequest_v0.decode(wire.encode())
    assert decoded.deletions == [("partner.pa", 2, {})]
    assert decoded.upsertions == []


def test_quotas_per_principal_and_zero_removes() -> None:
    q = quotas(S, agencies=["ag-a"], partners=["pa"])
    assert q == {
        kafka_client.agency("ag-a"): {
            PRODUCER_BYTE_RATE: 1024 * 1024,
            REQUEST_PERCENTAGE: S.kafka_agency_request_percentage,
        },
        kafka_client.partner("pa"): {
            CONSUMER_BYTE_RATE: 4 * 1024 * 1024,
            REQUEST_PERCENTAGE: S.kafka_partner_request_percentage,
        },
    }
    off = S.model_copy(update={"kafka_partner_consumer_byte_rate": 0})
    assert (
        quotas(off, agencies=[], partners=["pa"])[kafka_client.partner("pa")][CONSUMER_BYTE_RATE]
        is None
    )
    entry: tuple[QuotaEntity, list[QuotaOp]] = (
        [("user", "partner.pa")],
        [(CONSUMER_BYTE_RATE, 0.0, True)],
    )
    wire = AlterClientQuotasRequest([entry]).build(AlterClientQuotasRequest_v0)
    assert AlterClientQuotasRequest_v0.decode(wire.encode()).entries == [entry]


def test_cleanup_selects_only_names_under_the_prefixes() -> None:
    acls: list[AclFilter] = [
        (2, name, 3, "User:x", "*", 3, 3)
        for name in ("it-1.inbound", "it-1-relay", "it-10.inbound", "accord.inbound", "x.it-1.")
    ]
    assert [a[1] for a in acls_under(acls, ["it-1.", "it-1-"])] == ["it-1.inbound", "it-1-relay"]
    with pytest.raises(ValueError):
        acls_under(acls, ["it-1.", ""])
    with pytest.raises(ValueError):
        acls_under(acls, [])
