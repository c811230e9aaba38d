"""Consent snapshots sealed to their survivor, pure: what ``accord.consent.changes`` holds
(format cs1).

The snapshot is the survivor's sharing state (consents' provisions, declarations, court
orders' scope), published by the API for the relay's consent view. It is sealed like an
inbound event (``services.atrest.inbound``: HPKE to the survivor's key pair derived from their
data key), so a broker, its disks and backups hold only ids::

    {"accordsealed": "cs1", "survivor": S, "generation": G, "hpke": base64url}

The HPKE ``info`` binds format, survivor and generation; the record's Kafka key must be the
same survivor (the view checks it), so a snapshot cannot be replayed as another survivor's.
"""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.atrest.envelope import Unreadable
from services.atrest.inbound import MARKER, canonical, hpke_open, hpke_seal

FORMAT = "cs1"


def _info(survivor_id: str, generation: int) -> bytes:
    return canonical({"format": FORMAT, "survivor": survivor_id, "generation": generation})


def seal_snapshot(payload: bytes, *, public_key: bytes, survivor_id: str, generation: int) -> bytes:
    return json.dumps(
        {
            MARKER: FORMAT,
            "survivor": survivor_id,
            "generation": generation,
            "hpke": hpke_seal(payload, public_key, _info(survivor_id, generation)),
        },
        separators=(",", ":"),
    ).encode()


def read_header(record: bytes) -> tuple[str, int] | None:
    """(survivor, generation) of a sealed snapshot; None for a plaintext one.

    Raises ``Unreadable`` for a record that claims the format but whose header is broken."""
    try:
        doc = json.loads(record)
    except ValueError:
        raise Unreadable("a consent snapshot that is not JSON") from None
    if not isinstance(doc, dict) or MARKER not in doc:
        return None
    survivor, generation = doc.get("survivor"), doc.get("generation")
    if (
        doc[MARKER] != FORMAT
        or not isinstance(survivor, str)
        or not isinstance(generation, int)
        or isinstance(generation, bool)
    ):
        raise Unreadable(f"a sealed snapshot whose header is not {FORMAT}")
    return survivor, generation


def open_snapshot(record: bytes, key: X25519PrivateKey) -> bytes:
    header = read_header(record)
    if header is None:
        raise Unreadable("not a sealed snapshot")
    return hpke_open(json.loads(record).get("hpke"), key, _info(*header))
