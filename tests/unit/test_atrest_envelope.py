"""Envelope encryption, pure: the ciphertext format, its binding (AAD), KEKs and the ring."""

from __future__ import annotations

import base64
import os

import pytest

from services.atrest import envelope
from services.atrest.envelope import KekRing, LocalKek, Unreadable

WHERE = {"survivor_id": "sv-1", "purpose": "consent_versions.evidence", "row": "consent-a:1"}
SECRET = b'{"kind":"form_reference","reference":"signed form #17"}'


def test_round_trip_and_the_token_is_self_describing() -> None:
    dek = envelope.new_dek()
    token = envelope.seal(dek, 3, SECRET, **WHERE)
    assert token.startswith("ac1.3.") and SECRET.decode() not in token
    assert envelope.generation_of(token) == 3
    assert envelope.open_sealed(dek, token, **WHERE) == SECRET
    # A fresh nonce each time: the same text never gives the same ciphertext.
    assert envelope.seal(dek, 3, SECRET, **WHERE) != token


@pytest.mark.parametrize("part", [2, 3])
def test_an_altered_nonce_or_ciphertext_does_not_open(part: int) -> None:
    dek = envelope.new_dek()
    parts = envelope.seal(dek, 1, SECRET, **WHERE).split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[0] ^= 1
    parts[part] = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(Unreadable):
        envelope.open_sealed(dek, ".".join(parts), **WHERE)


@pytest.mark.parametrize(
    "other",
    [
        {"survivor_id": "sv-2"},  # moved to another survivor
        {"purpose": "declarations.justification"},  # moved to another column
        {"row": "consent-a:2"},  # moved to another row
    ],
)
def test_a_ciphertext_moved_elsewhere_does_not_open(other: dict[str, str]) -> None:
    dek = envelope.new_dek()
    token = envelope.seal(dek, 1, SECRET, **WHERE)
    with pytest.raises(Unreadable):
        envelope.open_sealed(dek, token, **{**WHERE, **other})


def test_the_generation_in_the_header_is_bound_too() -> None:
    dek = envelope.new_dek()
    token = envelope.seal(dek, 1, SECRET, **WHERE)
    with pytest.raises(Unreadable):
        envelope.open_sealed(dek, token.replace("ac1.1.", "ac1.2.", 1), **WHERE)


def test_another_data_key_does_not_open_it_and_garbage_is_unreadable() -> None:
    token = envelope.seal(envelope.new_dek(), 1, SECRET, **WHERE)
    with pytest.raises(Unreadable):
        envelope.open_sealed(envelope.new_dek(), token, **WHERE)
    for bad in ("", "ac1", "ac2.1.AAAA.AAAA", "ac1.x.AAAA.AAAA", "ac1.1.!!.!!"):
        with pytest.raises(Unreadable):
            envelope.open_sealed(envelope.new_dek(), bad, **WHERE)


def test_a_wrapped_data_key_is_bound_to_its_survivor_and_generation() -> None:
    kek = LocalKek("k1", os.urandom(32))
    dek = envelope.new_dek()
    wrapped = kek.wrap(dek, envelope.dek_context("sv-1", 1))
    assert dek not in wrapped
    assert kek.unwrap(wrapped, envelope.dek_context("sv-1", 1)) == dek
    for context in (envelope.dek_context("sv-2", 1), envelope.dek_context("sv-1", 2)):
        with pytest.raises(Unreadable):
            kek.unwrap(wrapped, context)
    with pytest.raises(Unreadable):
        LocalKek("k1", os.urandom(32)).unwrap(wrapped, envelope.dek_context("sv-1", 1))


def test_ring_configuration() -> None:
    a, b = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    ring = envelope.parse_ring(f"old:{a}, new:{b}", "new")
    assert ring.active_id == "new" and set(ring.keks) == {"old", "new"}
    assert envelope.parse_ring(f"only:{a}", "").active_id == "only"
    for spec, active in [
        ("", ""),
        (f"old:{a},new:{b}", ""),  # several: which one is active must be said
        (f"old:{a}", "new"),  # active not configured
        (f"old:{a},old:{b}", "old"),
        ("old:not-base64!", "old"),
        (f"old:{base64.b64encode(os.urandom(16)).decode()}", "old"),  # not 256 bits
        (a, ""),  # no id
    ]:
        with pytest.raises(ValueError):
            envelope.parse_ring(spec, active)
    with pytest.raises(Unreadable, match="not configured"):
        ring.unwrap("gone", b"x" * 40, b"{}")


def test_a_kek_never_shows_its_key() -> None:
    raw = os.urandom(32)
    ring = KekRing({"k1": LocalKek("k1", raw)}, "k1")
    shown = repr(ring) + str(ring.active)
    assert base64.b64encode(raw).decode() not in shown and raw.hex() not in shown
