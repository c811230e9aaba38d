"""The dev stack's own certificate authority and the Kafka broker's certificate.

Made once with ``cryptography`` under ``<state_dir>/kafka/tls/`` (gitignored, keys 0600):
``ca.pem`` is what clients trust (``ACCORD_KAFKA_CA_FILE``); ``broker.pem`` holds the broker's
PKCS#8 key and its certificate chain, the form Kafka's ``ssl.keystore.type=PEM`` reads. The
CA's key is not kept: nothing else is ever signed with it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID = timedelta(days=365)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_broker_tls(directory: Path, hosts: Sequence[str] = ()) -> tuple[str, str]:
    """(keystore, truststore) paths, made if missing or expiring within a day. ``hosts``: more
    DNS names for the broker's certificate (the compose pilot's service name)."""
    keystore, ca_file = directory / "broker.pem", directory / "ca.pem"
    if keystore.exists() and ca_file.exists():
        cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
        if cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1):
            return str(keystore), str(ca_file)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Accord dev stack CA"))
        .issuer_name(_name("Accord dev stack CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("accord-kafka"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALID)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    *(x509.DNSName(h) for h in hosts),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write_private(
        keystore,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca_cert.public_bytes(pem),
    )
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    return str(keystore), str(ca_file)
