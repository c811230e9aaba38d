"""Provenance of inbound events: an agency signs what it publishes, the relay checks it.

The signature is Ed25519 (PyNaCl) over the event's canonical JSON (``canonicaljson``: sorted
keys, no insignificant whitespace, UTF-8) without the ``accordsignature`` attribute, and
travels in that CloudEvents extension attribute, base64-encoded. It covers every attribute,
so an agency cannot publish as another, and nobody can alter an event in transit.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import canonicaljson
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

SIGNATURE = "accordsignature"


def canonical(event: Mapping[str, Any]) -> bytes:
    return bytes(
        canonicaljson.encode_canonical_json({k: v for k, v in event.items() if k != SIGNATURE})
    )


def sign_event(event: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    signature = key.sign(canonical(event)).signature
    return {**event, SIGNATURE: base64.b64encode(signature).decode()}


def verify_event(event: Mapping[str, Any], public_key: str | None) -> bool:
    """True only if the event carries a valid signature by the holder of ``public_key``."""
    signature = event.get(SIGNATURE)
    if not isinstance(signature, str) or not public_key:
        return False
    try:
        VerifyKey(base64.b64decode(public_key, validate=True)).verify(
            canonical(event), base64.b64decode(signature, validate=True)
        )
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def public_key_of(key: SigningKey) -> str:
    return base64.b64encode(bytes(key.verify_key)).decode()
