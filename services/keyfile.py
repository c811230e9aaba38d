"""A long-lived secret key from configuration (base64) or, in development, a local file.

A leaf module (standard library only): the keys of data at rest (services/atrest/keys.py) and
the audit's keys (services/audit/signing.py) are both read this way, and neither domain
needs the other for it.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path


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
