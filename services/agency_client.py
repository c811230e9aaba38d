"""The agency's side, without writing code: an Ed25519 signing key in a file, and publishing
an event given as JSON (``accord keys agency-keypair``, ``accord publish``).

Signing is ``services.events.provenance.sign_event``, the same function the demo and the
tests sign with. The event goes to ``POST /v1/events`` with the agency's API key; the API
seals it to its survivor before it reaches Kafka. Nothing here logs the event.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from nacl.signing import SigningKey

from services.events import provenance

CLOUDEVENTS = "application/cloudevents+json"


class PublishError(RuntimeError):
    """The event could not be published; the message says why (never the event's content)."""


def new_signing_key_file(path: str | Path) -> str:
    """Create an Ed25519 signing key file (the 32-byte seed, base64, one line; mode 0600,
    never overwritten); returns the verify key to register as the agency's ``public_key``."""
    key = SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(bytes(key)).decode() + "\n")
    return provenance.public_key_of(key)


def load_signing_key(path: str | Path) -> SigningKey:
    text = Path(path).read_text().strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError(f"{path}: not a base64 key file") from exc
    if len(raw) != 32:
        raise ValueError(f"{path}: a signing key is 32 bytes, this has {len(raw)}")
    return SigningKey(raw)


def complete(event: dict[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """Fill what a hand-written event may leave out: ``specversion``, a fresh ``id`` and the
    current ``time`` (an event older than the replay window is refused, so a file kept as a
    template must not carry a fixed time)."""
    return {
        "specversion": "1.0",
        "id": f"evt-{uuid.uuid4().hex}",
        "time": (now or datetime.now(UTC)).isoformat(),
        **event,
    }


def read_event(path: str | Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except ValueError:
        raise PublishError(f"{path}: not JSON") from None
    if not isinstance(doc, dict):
        raise PublishError(f"{path}: a CloudEvent is a JSON object")
    for name in ("source", "type", "subject", "data"):
        if name not in doc:
            raise PublishError(f"{path}: the event needs {name!r}")
    return doc


def publish(
    event: dict[str, Any], key: SigningKey, *, api_url: str, api_key: str, timeout_s: float = 30
) -> dict[str, Any]:
    """Sign ``event`` and publish it; the API's answer (``{"id", "status"}``)."""
    signed = provenance.sign_event(event, key)
    try:
        r = httpx.post(
            f"{api_url.rstrip('/')}/v1/events",
            content=json.dumps(signed).encode(),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": CLOUDEVENTS},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise PublishError(f"the API did not answer: {type(exc).__name__}") from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text[:200]
        raise PublishError(f"the API answered {r.status_code}: {json.dumps(detail)}")
    answer: dict[str, Any] = r.json()
    return answer
