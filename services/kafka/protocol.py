"""The Kafka requests aiokafka 0.14 sends but has no call (or no usable builder) for, each
declared here with aiokafka's protocol types: one module for every hand-declared request.

aiokafka declares the structs of CreateAcls v1, DescribeAcls v1, DeleteAcls v1 and
DescribeClientQuotas v0 (its builders send one filter at a time, or no null names, so ours are
below); AlterUserScramCredentials v0, AlterClientQuotas v0 and OffsetFetch v7 (KIP-447's
``require_stable``) are declared from Kafka's message specs
(``AlterUserScramCredentialsRequest.json``, ``AlterClientQuotasRequest.json``,
``OffsetFetchRequest.json``). The calls that send them are ``services/kafka/admin.py`` and
``services/kafka/offsets.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TypeAlias

from aiokafka import TopicPartition
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
    DescribeClientQuotasRequest_v0,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    Boolean,
    CompactArray,
    CompactBytes,
    CompactString,
    Float64,
    Int8,
    Int16,
    Int32,
    Int64,
    Schema,
    String,
    TaggedFields,
)

SCRAM_SHA_512 = 2  # the mechanism's id in AlterUserScramCredentials
RESOURCE_NOT_FOUND = 91  # Kafka's error code (aiokafka has no class for it)
UNSTABLE_OFFSET_COMMIT = 88  # Kafka's error code (aiokafka has no class for it)
NO_OFFSET = -1  # OffsetFetch's committed offset when nothing is committed

# The codes of ACL resource types, pattern types, operations and permissions on the wire.
ANY = 1  # the "any" value of resource type, pattern type, operation and permission filters


class Resource(enum.IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Pattern(enum.IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Op(enum.IntEnum):
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    IDEMPOTENT_WRITE = 12


ALLOW = 3  # the permission type of every ACL Accord creates


class AlterUserScramCredentialsResponse_v0(Response):  # type: ignore[misc]
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


Upsertion: TypeAlias = tuple[str, int, int, bytes, bytes, dict[int, bytes]]


class AlterUserScramCredentialsRequest(Request[AlterUserScramCredentialsRequest_v0]):  # type: ignore[misc]
    API_KEY = 51

    def __init__(self, upsertions: list[Upsertion], deletions: Iterable[str] = ()) -> None:
        self._upsertions = upsertions
        self._deletions: list[tuple[str, int, dict[int, bytes]]] = [
            (name, SCRAM_SHA_512, {}) for name in deletions
        ]

    def build(
        self, request_struct_class: type[AlterUserScramCredentialsRequest_v0]
    ) -> AlterUserScramCredentialsRequest_v0:
        return request_struct_class(self._deletions, self._upsertions, {})


class CreateAclsRequest(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    """Many bindings in one request (aiokafka's own builder sends one)."""

    API_KEY = 30

    def __init__(self, creations: list[tuple[int, str, int, str, str, int, int]]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


# A DeleteAcls or DescribeAcls filter: resource type, name (None: any), pattern type,
# principal (None: any), host (None: any), operation, permission type.
AclFilter: TypeAlias = tuple[int, str | None, int, str | None, str | None, int, int]


class DeleteAclsRequest(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]
    """Many filters in one request (aiokafka's own builder sends one, without null names)."""

    API_KEY = 31

    def __init__(self, filters: list[AclFilter]) -> None:
        self._filters = filters

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self._filters)


class DescribeAclsRequest(Request[DescribeAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 29

    def __init__(self, f: AclFilter) -> None:
        self._filter = f

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(*self._filter)


# Client quotas, per user (principal): Kafka's quota names, values in bytes/s or percent.
QuotaEntity: TypeAlias = list[tuple[str, str | None]]  # [("user", principal)]
QuotaOp: TypeAlias = tuple[str, float, bool]  # (key, value, remove)


class AlterClientQuotasResponse_v0(Response):  # type: ignore[misc]
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "entries",
            Array(
                ("error_code", Int16),
                ("error_message", String("utf-8")),
                (
                    "entity",
                    Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8"))),
                ),
            ),
        ),
    )


class AlterClientQuotasRequest_v0(RequestStruct):  # type: ignore[misc]
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = AlterClientQuotasResponse_v0
    SCHEMA = Schema(
        (
            "entries",
            Array(
                (
                    "entity",
                    Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8"))),
                ),
                ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))),
            ),
        ),
        ("validate_only", Boolean),
    )


class AlterClientQuotasRequest(Request[AlterClientQuotasRequest_v0]):  # type: ignore[misc]
    API_KEY = 49

    def __init__(self, entries: list[tuple[QuotaEntity, list[QuotaOp]]]) -> None:
        self._entries = entries

    def build(
        self, request_struct_class: type[AlterClientQuotasRequest_v0]
    ) -> AlterClientQuotasRequest_v0:
        return request_struct_class(self._entries, False)


class DescribeClientQuotasRequest(Request[DescribeClientQuotasRequest_v0]):  # type: ignore[misc]
    API_KEY = 48
    EXACT = 0

    def __init__(self, user: str) -> None:
        self._user = user

    def build(
        self, request_struct_class: type[DescribeClientQuotasRequest_v0]
    ) -> DescribeClientQuotasRequest_v0:
        return request_struct_class([("user", self.EXACT, self._user)], True)


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class StableOffsetFetchRequest(Request[OffsetFetchRequest_v7]):  # type: ignore[misc]
    API_KEY = 9

    def __init__(self, group_id: str, tp: TopicPartition) -> None:
        self._group_id = group_id
        self._tp = tp

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        topics: list[tuple[str, list[int], dict[int, bytes]]] = [
            (self._tp.topic, [self._tp.partition], {})
        ]
        return request_struct_class(self._group_id, topics, True, {})
