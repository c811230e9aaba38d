"""The relay's sealing key, from configuration (production) or a local file (development)."""

from __future__ import annotations

import base64

from nacl.public import PrivateKey

from services.settings import Settings


def relay_key(s: Settings) -> PrivateKey:
    if s.relay_private_key:
        return PrivateKey(base64.b64decode(s.relay_private_key, validate=True))
    path = s.state_dir / "keys" / "relay.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(bytes(PrivateKey.generate())).decode())
    return PrivateKey(base64.b64decode(path.read_text().strip(), validate=True))
