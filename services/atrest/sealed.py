"""Records sealed to their survivor, pure: what Kafka holds of a survivor's data.

Kafka keeps what it is given for a topic's retention, on the brokers' disks and in every
replica. So the two kinds of record that carry a survivor's data travel sealed to that
survivor: HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM,
through ``cryptography``. Each survivor's X25519 key pair is derived from the survivor's data
key (docs/at-rest.md), so

* publishers seal with a public key and need no secret of Accord's;
* only a holder of the KEK ring (the relay) can open, and only for one poll or batch;
* erasing the survivor's data key (``accord keys erase``) makes every record still retained
  in a topic unreadable too: crypto-shredding covers the log, not only the database.

A record is JSON, so size limits and the dead-letter path treat it like any other::

    {"accordsealed": FORMAT, ["agency": A,] "survivor": S, "generation": G, "hpke": base64url}

* ``ib1``, an agency's event on ``accord.inbound``: the plaintext is its signed CloudEvent,
  byte for byte (the relay checks the signature after opening, and that the event names the
  agency and survivor of the header);
* ``cs1``, the API's consent snapshot on ``accord.consent.changes`` (no agency).

``hpke`` is the encapsulated key followed by the ciphertext. The HPKE ``info`` binds the
header (format, survivor, generation, agency): a record whose header was edited does not open.
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

MARKER = "accordsealed"
EVENT = "ib1"
SNAPSHOT = "cs1"
_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
# Key separation: the X25519 key is derived from the DEK, never the DEK itself.
_DERIVE_INFO = b"accord/ib1/x25519"
# base64 (4/3) of the plaintext plus the encapsulated key, tag and header.
OVERHEAD_BYTES = 1024


@dataclass(frozen=True)
class Header:
    """What a sealed record says about itself, in clear (ids are pseudonymous)."""

    format: str
    survivor_id: str
    generation: int
    agency_id: str | None = None  # events only: who published

    @property
    def key(self) -> tuple[str, int]:
        """Which survivor key opens the record."""
        return self.survivor_id, self.generation

    def fields(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "format": self.format,
            "survivor": self.survivor_id,
            "generation": self.generation,
        }
        if self.agency_id is not None:
            fields["agency"] = self.agency_id
        return fields

    def info(self) -> bytes:
        """What the HPKE ``info`` binds: the whole header."""
        return bytes(canonicaljson.encode_canonical_json(self.fields()))


def event_header(agency_id: str, survivor_id: str, generation: int) -> Header:
    return Header(EVENT, survivor_id, generation, agency_id)


def snapshot_header(survivor_id: str, generation: int) -> Header:
    return Header(SNAPSHOT, survivor_id, generation)


@dataclass(frozen=True)
class Sealed:
    """A parsed sealed record: its header and its ciphertext, not yet opened."""

    header: Header
    token: str


def private_key(dek: bytes) -> X25519PrivateKey:
    """The survivor's key pair for this DEK generation (deterministic)."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVE_INFO).derive(dek)
    return X25519PrivateKey.from_private_bytes(seed)


def public_key(dek: bytes) -> bytes:
    return private_key(dek).public_key().public_bytes_raw()


def seal(plaintext: bytes, header: Header, *, public_key: bytes) -> bytes:
    """The record: ``plaintext`` sealed to ``public_key``, bound to ``header``."""
    try:
        recipient = X25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise ValueError("not an X25519 public key (32 bytes)") from None
    ciphertext = _SUITE.encrypt(plaintext, recipient, info=header.info())
    token = base64.urlsafe_b64encode(ciphertext).decode().rstrip("=")
    fields = {k: v for k, v in header.fields().items() if k != "format"}
    # The marker first: parse() looks for it in the first bytes.
    doc = {MARKER: header.format, **fields, "hpke": token}
    return json.dumps(doc, separators=(",", ":")).encode()


def parse(record: bytes, format: str) -> Sealed | None:
    """The sealed record of ``format``; None when ``record`` is not sealed (plaintext,
    garbage). Raises ``Unreadable`` for one that claims to be sealed but is not ``format`` or
    whose header is broken."""
    if MARKER.encode() not in record[:64]:
        return None  # cheap: every sealed record starts with the marker
    try:
        doc = json.loads(record)
    except ValueError:
        return None
    if not isinstance(doc, dict) or MARKER not in doc:
        return None
    agency, survivor, generation = doc.get("agency"), doc.get("survivor"), doc.get("generation")
    token = doc.get("hpke")
    if (
        doc[MARKER] != format
        or (format == EVENT) != isinstance(agency, str)
        or not isinstance(survivor, str)
        or not isinstance(generation, int)
        or isinstance(generation, bool)
        or not isinstance(token, str)
    ):
        raise Unreadable(f"a sealed record whose header is not {format}")
    return Sealed(Header(format, survivor, generation, agency), token)


def open_record(sealed: Sealed, key: X25519PrivateKey) -> bytes:
    """The plaintext. Raises ``Unreadable`` if the record does not open under ``key``."""
    token = sealed.token
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return _SUITE.decrypt(raw, key, info=sealed.header.info())
    except (InvalidTag, ValueError, binascii.Error):
        raise Unreadable("a sealed record does not open: altered, or not this survivor's") from None
