"""Envelope encryption, pure: AES-256-GCM data keys (DEKs) wrapped by key-encryption keys.

A survivor's content is sealed with that survivor's DEK; the DEK is stored only wrapped by a
key-encryption key (KEK) held outside the database (configuration today, a KMS later: any
object with ``key_id``, ``wrap`` and ``unwrap`` will do, see docs/at-rest.md). Whoever reads
the database or a backup without the KEK reads nothing; destroying one survivor's wrapped DEK
makes everything sealed with it unreadable by anyone (crypto-shredding).

Ciphertext is text, self-describing and versioned::

    ac1.<generation>.<nonce, base64url>.<ciphertext and GCM tag, base64url>

``ac1`` is the format, ``generation`` names which of the survivor's DEKs sealed it. The GCM
additional data binds the ciphertext to its format, generation, survivor, purpose (which
column) and row, so a ciphertext copied to another row, column or survivor does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import canonicaljson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = "ac1"
DEK_BYTES = 32  # AES-256
NONCE_BYTES = 12  # random 96-bit nonces: far below the 2^32 messages per key GCM allows


class Unreadable(Exception):
    """A ciphertext or wrapped key that does not open: altered, moved, or under an unknown key.

    The message names the cause, never the content.
    """


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """Wraps and unwraps data keys. ``context`` must be given again to unwrap (a KMS's
    "encryption context"): it ties a wrapped DEK to its survivor and generation."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, dek: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


class LocalKek:
    """A KEK whose 32 bytes come from configuration; wraps with AES-256-GCM."""

    def __init__(self, key_id: str, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"KEK {key_id!r} must be 32 bytes (base64 of 32 random bytes)")
        self._id = key_id
        self._aead = AESGCM(key)

    @property
    def key_id(self) -> str:
        return self._id

    def wrap(self, dek: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, dek, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag:
            raise Unreadable("a wrapped data key does not open under its KEK") from None

    def __repr__(self) -> str:  # never the key
        return f"LocalKek({self._id!r})"


@dataclass(frozen=True)
class KekRing:
    """Every KEK a process can unwrap with, and the one new or re-wrapped DEKs use.

    Rotation keeps the old KEK in the ring until every DEK was re-wrapped (``store.rewrap``).
    """

    keks: Mapping[str, KeyEncryptionKey]
    active_id: str

    def __post_init__(self) -> None:
        if self.active_id not in self.keks:
            raise ValueError(f"the active KEK {self.active_id!r} is not in the ring")

    @property
    def active(self) -> KeyEncryptionKey:
        return self.keks[self.active_id]

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        kek = self.keks.get(kek_id)
        if kek is None:
            raise Unreadable(f"a data key is wrapped by KEK {kek_id!r}, which is not configured")
        return kek.unwrap(wrapped, context)


def parse_ring(spec: str, active: str) -> KekRing:
    """``id:base64key[,id:base64key...]`` (ACCORD_KEKS) and the active id (ACCORD_KEK_ACTIVE;
    empty: the only one)."""
    keks: dict[str, KeyEncryptionKey] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        key_id, sep, b64 = item.partition(":")
        if not sep or not key_id:
            raise ValueError("ACCORD_KEKS entries are id:base64key, separated by commas")
        if key_id in keks:
            raise ValueError(f"KEK id {key_id!r} is given twice")
        try:
            key = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise ValueError(f"KEK {key_id!r} is not valid base64") from None
        keks[key_id] = LocalKek(key_id, key)
    if not keks:
        raise ValueError("ACCORD_KEKS names no key")
    if not active:
        if len(keks) > 1:
            raise ValueError("several KEKs are configured: set ACCORD_KEK_ACTIVE")
        active = next(iter(keks))
    return KekRing(keks, active)


def new_dek() -> bytes:
    return AESGCM.generate_key(bit_length=8 * DEK_BYTES)


def dek_context(survivor_id: str, generation: int) -> bytes:
    return _canonical({"dek": FORMAT, "survivor": survivor_id, "generation": generation})


def _canonical(value: object) -> bytes:
    return bytes(canonicaljson.encode_canonical_json(value))


def _aad(generation: int, survivor_id: str, purpose: str, row: str) -> bytes:
    return _canonical(
        {
            "v": FORMAT,
            "generation": generation,
            "survivor": survivor_id,
            "purpose": purpose,
            "row": row,
        }
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(
    dek: bytes, generation: int, plaintext: bytes, *, survivor_id: str, purpose: str, row: str
) -> str:
    nonce = os.urandom(NONCE_BYTES)
    ct = AESGCM(dek).encrypt(nonce, plaintext, _aad(generation, survivor_id, purpose, row))
    return f"{FORMAT}.{generation}.{_b64(nonce)}.{_b64(ct)}"


def generation_of(token: str) -> int:
    """The DEK generation a ciphertext names (checked again by the AAD when it is opened)."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != FORMAT or not parts[1].isdigit():
        raise Unreadable(f"not an {FORMAT} ciphertext")
    return int(parts[1])


def open_sealed(dek: bytes, token: str, *, survivor_id: str, purpose: str, row: str) -> bytes:
    generation = generation_of(token)
    _, _, nonce, ct = token.split(".")
    try:
        return AESGCM(dek).decrypt(
            _unb64(nonce), _unb64(ct), _aad(generation, survivor_id, purpose, row)
        )
    except (InvalidTag, ValueError, binascii.Error):
        raise Unreadable("a ciphertext does not open: altered, or not of this row") from None
