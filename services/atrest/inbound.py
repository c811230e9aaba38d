"""Inbound events sealed to their survivor, pure: what ``accord.inbound`` holds (format ib1).

Kafka keeps what an agency publishes for the topic's retention, on the brokers' disks and in
every replica. So an event travels sealed to its survivor: HPKE (RFC 9180) base mode,
DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, through ``cryptography``. Each survivor's
X25519 key pair is derived from the survivor's data key (docs/at-rest.md), so

* agencies seal with a public key and need no secret of Accord's;
* only a holder of the KEK ring (the relay) can open, and only within one poll;
* erasing the survivor's data key (``accord keys erase``) makes every event still retained
  in the topic unreadable too: crypto-shredding covers the log, not only the database.

The record is JSON, so the size limit and the dead-letter path treat it like any event::

    {"accordsealed": "ib1", "agency": A, "survivor": S, "generation": G, "hpke": base64url}

``hpke`` is the encapsulated key followed by the ciphertext of the agency's signed CloudEvent,
byte for byte (its signature covers the canonical JSON, so the relay checks it after opening).
The HPKE ``info`` binds format, agency, survivor and generation: a record whose header was
edited does not open, and the relay checks that the opened event names the same agency and
survivor.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import canonicaljson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.atrest.envelope import Unreadable

FORMAT = "ib1"
MARKER = "accordsealed"
_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
# Key separation: the X25519 key is derived from the DEK, never the DEK itself.
_DERIVE_INFO = b"accord/ib1/x25519"
# base64 (4/3) of the event plus the encapsulated key, tag and header.
OVERHEAD_BYTES = 1024


@dataclass(frozen=True)
class Header:
    """What a sealed record says about itself, in clear (ids are pseudonymous)."""

    agency_id: str
    survivor_id: str
    generation: int

    @property
    def key(self) -> tuple[str, int]:
        return self.survivor_id, self.generation


def private_key(dek: bytes) -> X25519PrivateKey:
    """The survivor's inbound key pair for this DEK generation (deterministic)."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVE_INFO).derive(dek)
    return X25519PrivateKey.from_private_bytes(seed)


def public_key(dek: bytes) -> bytes:
    return private_key(dek).public_key().public_bytes_raw()


def _info(header: Header) -> bytes:
    return canonical(
        {
            "format": FORMAT,
            "agency": header.agency_id,
            "survivor": header.survivor_id,
            "generation": header.generation,
        }
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hpke_seal(plaintext: bytes, public_key: bytes, info: bytes) -> str:
    """base64url of HPKE's encapsulated key and ciphertext of ``plaintext``, bound to ``info``."""
    try:
        recipient = X25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise ValueError("not an X25519 public key (32 bytes)") from None
    return _b64(_SUITE.encrypt(plaintext, recipient, info=info))


def hpke_open(token: object, key: X25519PrivateKey, info: bytes) -> bytes:
    """The plaintext of ``hpke_seal``; raises ``Unreadable`` if it does not open."""
    if not isinstance(token, str):
        raise Unreadable("a sealed record without its ciphertext")
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return _SUITE.decrypt(sealed, key, info=info)
    except (InvalidTag, ValueError, binascii.Error):
        raise Unreadable(
            "a sealed record does not open: altered, or not of this survivor"
        ) from None


def canonical(value: object) -> bytes:
    return bytes(canonicaljson.encode_canonical_json(value))


def seal_event(event: bytes, *, public_key: bytes, header: Header) -> bytes:
    """The inbound record for ``event`` (the signed CloudEvent's bytes, unchanged)."""
    return json.dumps(
        {
            MARKER: FORMAT,
            "agency": header.agency_id,
            "survivor": header.survivor_id,
            "generation": header.generation,
            "hpke": hpke_seal(event, public_key, _info(header)),
        },
        separators=(",", ":"),
    ).encode()


def read_header(record: bytes) -> Header | None:
    """The header of a sealed record; None when ``record`` is not one (plaintext, garbage).

    Raises ``Unreadable`` for a record that claims the format but whose header is broken.
    """
    if MARKER.encode() not in record[:64]:
        return None  # cheap: every sealed record starts with the marker
    try:
        doc = json.loads(record)
    except ValueError:
        return None
    if not isinstance(doc, dict) or MARKER not in doc:
        return None
    agency, survivor, generation = doc.get("agency"), doc.get("survivor"), doc.get("generation")
    if (
        doc[MARKER] != FORMAT
        or not isinstance(agency, str)
        or not isinstance(survivor, str)
        or not isinstance(generation, int)
        or isinstance(generation, bool)
        or not isinstance(doc.get("hpke"), str)
    ):
        raise Unreadable(f"a sealed record whose header is not {FORMAT}")
    return Header(agency, survivor, generation)


def open_event(record: bytes, header: Header, key: X25519PrivateKey) -> bytes:
    """The signed CloudEvent's bytes. Raises ``Unreadable`` if the record does not open."""
    try:
        token = json.loads(record)["hpke"]
    except (ValueError, KeyError, TypeError):
        raise Unreadable("a sealed event without its ciphertext") from None
    return hpke_open(token, key, _info(header))
