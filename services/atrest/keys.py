"""Long-lived private keys: from configuration (production) or a local file (development).

The relay's Curve25519 sealing key, the audit's appender key and the development
key-encryption key for data at rest are kept this way; a key file is created once,
atomically, so processes starting together share one key.
"""

from __future__ import annotations

from nacl.public import PrivateKey

from services.atrest.envelope import KekRing, LocalKek, parse_ring
from services.keyfile import key_bytes
from services.settings import Settings


def relay_key(s: Settings) -> PrivateKey:
    return PrivateKey(key_bytes(s.relay_private_key, s.state_dir / "keys" / "relay.key"))


def kek_ring(s: Settings) -> KekRing:
    """The KEKs for data at rest: ``ACCORD_KEKS`` or, in development, one local key file."""
    if s.keks:
        return parse_ring(s.keks, s.kek_active)
    return KekRing({"dev": LocalKek("dev", key_bytes("", s.state_dir / "keys" / "kek.key"))}, "dev")
