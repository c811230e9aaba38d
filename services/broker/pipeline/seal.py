"""Stage 5, seal: each delivery sealed so that only its partner can read it, and knows the relay
sent it.

PyNaCl ``Box`` between the relay's static Curve25519 key and the partner's registered public
key (XSalsa20-Poly1305, a random 24-byte nonce per message). The shared key is computed once
per partner and cached, so sealing costs about 5 µs per delivery, against about 100 µs for a
sealed box plus an Ed25519 signature (measured when the design was chosen, docs/relay.md);
at the relay's target rates that difference is most of a core. A ``Box`` already proves to
the partner that the relay sent it: only the relay's and the partner's private keys can
produce it. It does not prove it to a third party (the partner could forge it too); that
proof is the signed, hash-chained audit log's job.

The plaintext repeats the delivery id and partner id of the record header, so a record cannot
be re-labelled for another partner or delivery without failing to open.

Record value: ``{"v": 1, "delivery_id", "partner_id", "relay_key", "box"}`` (base64 strings).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from services.broker.pipeline.model import Judged, PollItem

VERSION = 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def public_key_of(key: PrivateKey) -> str:
    return b64(bytes(key.public_key))


def delivery_id(event_id: str, partner_id: str) -> str:
    return f"{event_id}/{partner_id}"


class Sealer:
    """Seals payloads for partners; one instance per relay process (it caches shared keys)."""

    def __init__(self, relay_key: PrivateKey) -> None:
        self._key = relay_key
        self._public = public_key_of(relay_key)
        self._boxes: dict[str, Box] = {}

    def _box(self, partner_key: str) -> Box:
        box = self._boxes.get(partner_key)
        if box is None:
            box = Box(self._key, PublicKey(base64.b64decode(partner_key, validate=True)))
            self._boxes[partner_key] = box
        return box

    def seal(
        self, payload: dict[str, Any], *, partner_id: str, partner_key: str, did: str
    ) -> bytes:
        inner = {**payload, "accorddeliveryid": did, "accordpartner": partner_id}
        plaintext = json.dumps(inner, separators=(",", ":"), sort_keys=True).encode()
        sealed = self._box(partner_key).encrypt(plaintext)
        record = {
            "v": VERSION,
            "delivery_id": did,
            "partner_id": partner_id,
            "relay_key": self._public,
            "box": b64(bytes(sealed)),
        }
        return json.dumps(record, separators=(",", ":")).encode()


def sealed_pair(judged: Judged, sealer: Sealer) -> Judged:
    """The pair with its payload ``sealed`` for its partner; a pair without one as it is."""
    if judged.payload is None:
        return judged
    r = judged.recipient
    value = sealer.seal(
        judged.payload,
        partner_id=r.partner_id,
        partner_key=r.public_key,
        did=delivery_id(judged.event.id, r.partner_id),
    )
    return replace(judged, sealed=value)


def seal_all(items: Sequence[PollItem], sealer: Sealer) -> list[PollItem]:
    """The poll's items, each allowed pair's payload sealed for its partner."""
    return [
        replace(item, judged=tuple(sealed_pair(j, sealer) for j in item.judged)) for item in items
    ]


class OpenError(ValueError):
    """The delivery is not for this partner, was altered, or was not made by the relay."""


@dataclass(frozen=True)
class Opened:
    delivery_id: str
    event: dict[str, Any]


def open_delivery(
    record: bytes, *, partner_id: str, partner_key: PrivateKey, relay_key: str
) -> Opened:
    """What a partner does with a record: check the header, open the box, check the binding."""
    try:
        head = json.loads(record)
        if head.get("v") != VERSION or head.get("relay_key") != relay_key:
            raise OpenError("not sealed by the expected relay key")
        if head.get("partner_id") != partner_id:
            raise OpenError("addressed to another partner")
        box = Box(partner_key, PublicKey(base64.b64decode(relay_key, validate=True)))
        inner = json.loads(box.decrypt(base64.b64decode(head["box"], validate=True)))
    except (CryptoError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, OpenError):
            raise
        raise OpenError("the delivery could not be opened: altered, or not for this key") from exc
    if (
        inner.get("accorddeliveryid") != head["delivery_id"]
        or inner.get("accordpartner") != partner_id
    ):
        raise OpenError("header and sealed content disagree")
    return Opened(head["delivery_id"], inner)
