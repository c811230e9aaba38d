"""The audit signing key (Ed25519, for checkpoints): from configuration in production, or a
local file in development, the way ``services/keys.py`` keeps the relay's."""

from __future__ import annotations

import base64
import os
import tempfile

from nacl.signing import SigningKey, VerifyKey

from services.settings import Settings


def audit_key(s: Settings) -> SigningKey:
    if s.audit_signing_key:
        return SigningKey(base64.b64decode(s.audit_signing_key, validate=True))
    path = s.state_dir / "keys" / "audit.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(bytes(SigningKey.generate())).decode())
        try:
            os.link(tmp, path)  # atomic; whoever links first wins, every process reads that key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return SigningKey(base64.b64decode(path.read_text().strip(), validate=True))


def audit_verify_key(s: Settings) -> VerifyKey:
    return audit_key(s).verify_key
