"""How every Accord process connects to Kafka: SASL/SCRAM-SHA-512 over TLS, as one principal.

There is no PLAINTEXT path. Each component connects as its own principal (the relay, the API,
the audit sink, one per agency, one per partner), so the broker's ACLs limit what a stolen
credential reaches (``services/kafka/acls.py`` grants them). Passwords come from a JSON file
``{"<principal>": "<password>"}`` (``ACCORD_KAFKA_CREDENTIALS_FILE``; the dev stack writes
``<state_dir>/kafka/credentials.json``, mode 0600); a process needs only its own entries.
The broker's certificate is checked against ``ACCORD_KAFKA_CA_FILE``.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.settings import Settings

SECURITY_PROTOCOL = "SASL_SSL"
SASL_MECHANISM = "SCRAM-SHA-512"

# Fixed principals; agencies and partners get one each (``agency()``, ``partner()``).
ADMIN = "accord-admin"  # the broker's super user: provisioning and the operator's tools only
RELAY = "accord-relay"
API = "accord-api"  # HTTP ingest, consent publisher, rejections listing, partner HTTP feed
AUDIT = "accord-audit"  # the audit sink: the only reader of the decision topic besides the relay
CHECKPOINTER = "accord-checkpointer"  # the only writer of the witnessed audit checkpoints
REFERRALS = "accord-referrals"  # reads the partners' referral reply topics (in `accord sink`)


# The HTTP feed's consumer groups (``services/broker/edges/feed.py``), one per partner; the API's.
FEED_GROUP_PREFIX = "accord.feed."


def agency(agency_id: str) -> str:
    return f"agency.{agency_id}"


def partner(partner_id: str) -> str:
    return f"partner.{partner_id}"


class KafkaCredentialMissing(RuntimeError):
    """The credentials file has no password for the principal a component connects as."""


@dataclass(frozen=True)
class KafkaConn:
    """Where and as whom to connect; ``kwargs()`` goes into every aiokafka client."""

    bootstrap: str
    principal: str
    password: str = field(repr=False)
    cafile: str

    def kwargs(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": SECURITY_PROTOCOL,
            "sasl_mechanism": SASL_MECHANISM,
            "sasl_plain_username": self.principal,
            "sasl_plain_password": self.password,
            "ssl_context": ssl_context(self.cafile),
        }

    def java_properties(self) -> str:
        """The same connection for Kafka's Java tools (a client .properties file's body)."""
        return (
            f"bootstrap.servers={self.bootstrap}\n"
            f"security.protocol={SECURITY_PROTOCOL}\n"
            f"sasl.mechanism={SASL_MECHANISM}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.principal}" password="{self.password}";\n'
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={self.cafile}\n"
        )


@lru_cache(maxsize=8)
def ssl_context(cafile: str) -> ssl.SSLContext:
    """Verify the broker's certificate and host name against our CA only (not the system's)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def credentials_path(s: Settings) -> Path:
    return (
        Path(s.kafka_credentials_file)
        if s.kafka_credentials_file
        else s.state_dir / "kafka" / "credentials.json"
    )


def ca_path(s: Settings) -> Path:
    return Path(s.kafka_ca_file) if s.kafka_ca_file else s.state_dir / "kafka" / "tls" / "ca.pem"


def load_credentials(s: Settings) -> dict[str, str]:
    path = credentials_path(s)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise KafkaCredentialMissing(f"{path} is not a JSON object of principal -> password")
    return {str(k): v for k, v in doc.items()}


def new_password() -> str:
    return secrets.token_urlsafe(32)


def _write_credentials(s: Settings, creds: dict[str, str]) -> None:
    # 0600 from creation, then renamed over the old file: never readable by others, never torn.
    path = credentials_path(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def ensure_passwords(s: Settings, principals: list[str]) -> dict[str, str]:
    """Development only: generate a password for each principal not yet in the credentials
    file and rewrite it (0600, atomically). Returns every credential in the file."""
    creds = load_credentials(s)
    missing = [p for p in principals if p not in creds]
    if missing:
        for p in missing:
            creds[p] = new_password()
        _write_credentials(s, creds)
    return creds


def store_password(s: Settings, principal: str, password: str) -> None:
    """Replace (or add) ``principal``'s password in the credentials file (rotation)."""
    _write_credentials(s, {**load_credentials(s), principal: password})


def forget_password(s: Settings, principal: str) -> None:
    """Remove ``principal``'s password from the credentials file (revocation)."""
    creds = load_credentials(s)
    if creds.pop(principal, None) is not None:
        _write_credentials(s, creds)


def kafka(s: Settings, principal: str) -> KafkaConn:
    """The connection of ``principal`` to the configured broker."""
    password = load_credentials(s).get(principal)
    if password is None:
        raise KafkaCredentialMissing(
            f"no Kafka password for principal {principal!r} in {credentials_path(s)} "
            "(`accord kafka provision` creates the registered agencies' and partners')"
        )
    return KafkaConn(s.bootstrap_servers, principal, password, str(ca_path(s)))
