"""The dev stack's Kafka storage formatting: what it hands the storage tool."""

from __future__ import annotations

import uuid

import pytest

from services.devstack import kafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 encodes as '-' first: the storage tool read such an id as an option and failed.
    ids = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(ids))
    assert kafka.cluster_id_for_cli() == "AQEBAQEBAQEBAQEBAQEBAQ"


def test_cluster_ids_are_22_url_safe_characters() -> None:
    for _ in range(200):
        cid = kafka.cluster_id_for_cli()
        assert len(cid) == 22 and not cid.startswith("-")
        assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
