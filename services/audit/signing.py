"""The audit's two Ed25519 keys, kept apart.

* The **checkpoint key** signs witnessed checkpoints. Only the checkpointer worker
  (``accord audit checkpointer``) reads it, through ``Signer`` (``services.audit.chain``): here
  a key file its own OS user alone can read (``FileSigner``); a KMS signs the same way (an
  asymmetric Ed25519 key: ``Sign`` / ``AsymmetricSign`` with the payload, ``GetPublicKey`` for
  the verify key). No other process is given the file, and its settings hold only its path.
* The **appender key** signs each entry as it is appended (the audit sink, the API's services,
  ``accord keys erase``), so an entry written with database access alone is seen as forged.

Verifiers (the API, ``accord audit verify``, the checkpointer's check of new entries) use the
published verify keys only: ``ACCORD_AUDIT_VERIFY_KEY`` / ``ACCORD_AUDIT_APPENDER_VERIFY_KEY``
(hex) or the ``.pub`` files beside the development keys.
"""

from __future__ import annotations

import base64
import os
import stat
import tempfile
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from services.audit.chain import key_id
from services.keyfile import key_bytes
from services.settings import Settings


class KeyFileError(RuntimeError):
    """The checkpoint key file is missing, unreadable or readable by others (names the path,
    never the key)."""


def signing_key_path(s: Settings) -> Path:
    return Path(s.audit_signing_key_file) if s.audit_signing_key_file else _keys(s) / "audit.key"


def verify_key_path(s: Settings) -> Path:
    return Path(s.audit_verify_key_file) if s.audit_verify_key_file else _keys(s) / "audit.pub"


def _keys(s: Settings) -> Path:
    return s.state_dir / "keys"


class FileSigner:
    """The checkpoint key from a file that only its owner may read (mode 0400 or 0600, as ssh
    insists): a file group or others can read is refused rather than used."""

    def __init__(self, path: Path) -> None:
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFileError(f"{path} is readable by others than its owner: chmod 0400")
            seed = base64.b64decode(path.read_text().strip(), validate=True)
        except OSError as exc:
            raise KeyFileError(f"cannot read the checkpoint key {path}: {exc.strerror}") from exc
        self._key = SigningKey(seed)
        self.verify_key = self._key.verify_key
        self.key_id = key_id(self.verify_key)

    def sign(self, payload: bytes) -> bytes:
        return bytes(self._key.sign(payload).signature)


def create_dev_key(s: Settings) -> Path:
    """Development: make the checkpoint key (0400) and publish its verify key (0444), once."""
    path, pub = signing_key_path(s), verify_key_path(s)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)  # 0600
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode())
        os.chmod(tmp, 0o400)
        try:
            os.link(tmp, path)  # atomic: whoever links first wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    signer = FileSigner(path)
    publish_verify_key(pub, signer.verify_key)
    return path


def publish_verify_key(path: Path, key: VerifyKey) -> None:
    text = bytes(key).hex() + "\n"
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)


def _verify_key(configured: str, path: Path, what: str) -> VerifyKey:
    if configured:
        return VerifyKey(bytes.fromhex(configured.strip()))
    try:
        return VerifyKey(bytes.fromhex(path.read_text().strip()))
    except OSError as exc:
        raise KeyFileError(f"no published {what} verify key at {path}") from exc


def checkpoint_verify_key(s: Settings) -> VerifyKey:
    """The published key witnessed checkpoints are checked with (never the private key)."""
    return _verify_key(s.audit_verify_key, verify_key_path(s), "checkpoint")


def appender_key(s: Settings) -> SigningKey:
    """The appender key (``ACCORD_AUDIT_APPENDER_KEY``, or in development a key file), its
    verify key published beside it for the checkpointer and verifiers."""
    key = SigningKey(key_bytes(s.audit_appender_key, _keys(s) / "audit-appender.key"))
    if not s.audit_appender_key:
        publish_verify_key(_keys(s) / "audit-appender.pub", key.verify_key)
    return key


def appender_verify_key(s: Settings) -> VerifyKey:
    pub = _keys(s) / "audit-appender.pub"
    if not (s.audit_appender_verify_key or s.audit_appender_key or pub.exists()):
        appender_key(s)  # development: the key file and its .pub, made on first use
    if s.audit_appender_key and not s.audit_appender_verify_key:
        return appender_key(s).verify_key  # configured in the same environment (tests)
    return _verify_key(s.audit_appender_verify_key, pub, "appender")
