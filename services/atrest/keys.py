"""Long-lived private keys: from configuration (production) or a local file (development).

The relay's Curve25519 sealing key, the audit's appender key and the development
key-encryption key for data at rest are kept this way; a key file is created once,
atomically, so processes starting together share one key.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from nacl.public import PrivateKey

from services.atrest.envelope import KekRing, LocalKek, parse_ring
from services.settings import Settings


def key_bytes(configured: str, path: Path) -> bytes:
    """The configured key (base64), else the one in ``path``, created with 32 random bytes."""
    if configured:
        return base64.b64decode(configured, validate=True)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode())
        try:
            os.link(tmp, path)  # atomic: whoever links first wins, every process reads that key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return base64.b64decode(path.read_text().strip(), validate=True)


def relay_key(s: Settings) -> PrivateKey:
    return PrivateKey(key_bytes(s.relay_private_key, s.state_dir / "keys" / "relay.key"))


def kek_ring(s: Settings) -> KekRing:
    """The KEKs for data at rest: ``ACCORD_KEKS`` or, in development, one local key file."""
    if s.keks:
        return parse_ring(s.keks, s.kek_active)
    return KekRing({"dev": LocalKek("dev", key_bytes("", s.state_dir / "keys" / "kek.key"))}, "dev")
