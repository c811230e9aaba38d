"""Encryption at rest: survivor content in the database, sealed with per-survivor data keys.

``envelope`` is the pure cryptography (key-encryption keys, the ciphertext format);
``store`` keeps the wrapped data keys in ``survivor_keys`` and seals, opens, erases and
re-wraps through a database session; ``keys`` loads the long-lived keys (the key-encryption
keys, the relay's sealing key, the audit's appender key) from configuration or, in development,
local files. See docs/at-rest.md.
"""
