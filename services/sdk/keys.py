"""A partner's Curve25519 key pair: the private key stays with the partner, in a file."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from nacl.public import PrivateKey


def load_private_key(path: str | Path) -> PrivateKey:
    """Read a private key file: the 32-byte key, base64, on one line."""
    text = Path(path).read_text().strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError(f"{path}: not a base64 key file") from exc
    if len(raw) != PrivateKey.SIZE:
        raise ValueError(f"{path}: a private key is {PrivateKey.SIZE} bytes, this has {len(raw)}")
    return PrivateKey(raw)


def new_key_file(path: str | Path) -> str:
    """Create a private key file (mode 0600, never overwritten); returns the public key to
    register with Accord (base64)."""
    key = PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(bytes(key)).decode() + "\n")
    return base64.b64encode(bytes(key.public_key)).decode()
