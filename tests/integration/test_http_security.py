"""HTTP hardening on the real API: security headers, the body limit for chunked bodies,
rate limits on authentication failures and enrollment (on an API instance of its own with
tight limits), key rotation and revocation taking effect at once, and `accord api` serving
HTTPS with a certificate made at test time."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.auth.principals import Role
from services.auth.service import issue_credential
from services.db import make_engine, make_sessionmaker, transaction
from services.runtime import running_api
from services.settings import Settings
from tests.support.api_process import accord_api, api_env
from tests.support.stack import free_port, kafka_ready, run_tag

pytestmark = pytest.mark.integration


def _key(database: str, role: Role, subject: str, agency: str | None = None) -> str:
    with transaction(make_sessionmaker(make_engine(database))) as session:
        return issue_credential(session=session, role=role, subject=subject, agency_id=agency)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def own_instance(settings: Settings, **over: object) -> Settings:
    """Settings for a second API on the session's database, with topics and consumer groups
    of its own so its background sinks never take records from the session's API."""
    tag = f"{run_tag(settings)}-sec{uuid.uuid4().hex[:6]}"  # cleaned up with the session
    return settings.model_copy(
        update={
            "api_port": free_port(),
            "relay_group": tag,
            "topic_decisions": f"{tag}.decisions",
            "topic_deadletter": f"{tag}.deadletter",
            "topic_consents": f"{tag}.consents",
            **over,
        }
    )


# --- headers and body size --------------------------------------------------------------------


async def test_security_headers_on_api_responses(api: str, database: str) -> None:
    key = _key(database, Role.COMPLIANCE, "cmp-headers")
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        for r in (
            await http.get("/v1/audit/reviews", headers=bearer(key)),  # 200
            await http.get("/v1/audit/reviews"),  # 401
            await http.get("/v1/feed", headers=bearer(key)),  # 403
            await http.get("/openapi.json"),
        ):
            assert r.headers["x-content-type-options"] == "nosniff", r.url
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["cache-control"] == "no-store"
            assert (
                r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
            )


async def test_chunked_body_over_the_limit_is_413(
    api: str, database: str, settings: Settings
) -> None:
    key = _key(database, Role.AGENCY, "harbor-outreach")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"specversion": "1.0", "data": {"narrative": "'
        for _ in range(settings.max_event_bytes // 4096 + 1):
            yield b"x" * 4096
        yield b'"}}'

    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        r = await http.post("/v1/events", content=chunks(), headers=bearer(key))
        assert "content-length" not in r.request.headers  # it really was chunked
        assert r.status_code == 413


# --- rate limits ------------------------------------------------------------------------------


async def test_rate_limits_on_a_tight_instance(api: str, database: str, settings: Settings) -> None:
    tight = own_instance(settings, auth_failures_per_minute=6, enroll_per_minute=2)
    await kafka_ready(tight)
    advocate = _key(database, Role.ADVOCATE, "adv-ratelimit", "harbor-outreach")
    compliance = _key(database, Role.COMPLIANCE, "cmp-ratelimit")
    async with httpx.AsyncClient(base_url=api, timeout=30) as main:

        async def code() -> str:
            sv = f"sv-{uuid.uuid4().hex[:10]}"
            assert (
                await main.post("/v1/survivors", json={"survivor_id": sv}, headers=bearer(advocate))
            ).status_code == 201
            r = await main.post(
                f"/v1/survivors/{sv}/enrollment-codes", json={}, headers=bearer(advocate)
            )
            return str(r.json()["code"])

        codes = [await code() for _ in range(3)]
    async with running_api(tight) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        # Enrollment: two failures a minute per IP; the third waits, a valid code never does.
        for n in range(2):
            bad = await http.post("/v1/enroll", json={"code": f"{n:08x}-wrong"})
            assert bad.status_code == 401
        third = await http.post("/v1/enroll", json={"code": "0000000f-wrong"})
        assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
        for c in codes:
            assert (await http.post("/v1/enroll", json={"code": c})).status_code == 200
        # Authentication failures (the three failed enrollments were some): three more, then
        # further failures from this IP wait...
        for n in range(3):
            bad = await http.get("/v1/audit/reviews", headers=bearer(f"acc_{n:016x}_nope"))
            assert bad.status_code == 401
        blocked = await http.get("/v1/audit/reviews", headers=bearer("acc_00000000000000ff_no"))
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        assert blocked.headers["x-content-type-options"] == "nosniff"
        # ...but a good key from this IP is served.
        assert (await http.get("/v1/audit/reviews", headers=bearer(compliance))).status_code == 200


async def test_35_bad_keys_from_an_address_do_not_lock_out_a_valid_key_from_it(
    api: str, database: str, settings: Settings
) -> None:
    """Behind a proxy every client shares one address: others' failures (here 35, beyond the
    default budget of 30 a minute) must never refuse a valid key."""
    shared = own_instance(settings, auth_failures_per_minute=30, enroll_per_minute=10)
    await kafka_ready(shared)
    compliance = _key(database, Role.COMPLIANCE, "cmp-shared-address")
    wrong_secret = compliance.rsplit("_", 1)[0] + "_" + "A" * 43  # its id, a wrong secret
    async with running_api(shared) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        codes = []
        for n in range(35):
            key = wrong_secret if n % 2 else f"acc_{n:016x}_nope"
            codes.append((await http.get("/v1/audit/reviews", headers=bearer(key))).status_code)
        assert codes.count(401) == 30 and codes[30:] == [429] * 5
        for _ in range(3):
            assert (
                await http.get("/v1/audit/reviews", headers=bearer(compliance))
            ).status_code == 200


async def test_accord_api_takes_the_client_from_trusted_forwarders_only(
    database: str, settings: Settings, tmp_path: Path
) -> None:
    """`accord api --proxy-headers --forwarded-allow-ips …`: failures are counted per
    X-Forwarded-For client when the connection comes from a trusted forwarder, and per
    socket peer otherwise (a client cannot pick its own bucket)."""
    s = own_instance(settings, auth_failures_per_minute=2)
    await kafka_ready(s)
    compliance = _key(database, Role.COMPLIANCE, "cmp-forwarded")

    async def failures(base: str, client_ip: str, n: int) -> list[int]:
        headers = {**bearer("acc_00000000000000ee_nope"), "X-Forwarded-For": client_ip}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            return [
                (await http.get("/v1/audit/reviews", headers=headers)).status_code for _ in range(n)
            ]

    for trusted, expect_other in (("127.0.0.1", [401, 401]), ("192.0.2.1", [429, 429])):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        args = ["--port", str(port), "--proxy-headers", "--forwarded-allow-ips", trusted]
        log = tmp_path / f"api-{trusted}.log"
        async with accord_api(s, log, *args, ready=f"{base}/openapi.json"):
            # The per-key bucket would mix the two clients: a distinct key id per client.
            assert await failures(base, "203.0.113.7", 3) == [401, 401, 429]
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                other = {**bearer("acc_00000000000000dd_nope"), "X-Forwarded-For": "203.0.113.8"}
                got = [
                    (await http.get("/v1/audit/reviews", headers=other)).status_code
                    for _ in range(2)
                ]
                assert got == expect_other, trusted
                good = {**bearer(compliance), "X-Forwarded-For": "203.0.113.7"}
                assert (await http.get("/v1/audit/reviews", headers=good)).status_code == 200


# --- rotation and revocation ------------------------------------------------------------------


async def test_rotating_a_key_stops_the_old_one_at_once(api: str, database: str) -> None:
    old = _key(database, Role.COMPLIANCE, "cmp-rotate")
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        assert (await http.get("/v1/audit/reviews", headers=bearer(old))).status_code == 200
        r = await http.post("/v1/credentials/rotate", headers=bearer(old))
        assert r.status_code == 200
        out = r.json()
        new = out["api_key"]
        assert new != old and out["revoked_credential_id"] == old.split("_")[1]
        assert out["credential_id"] == new.split("_")[1]
        assert (await http.get("/v1/audit/reviews", headers=bearer(old))).status_code == 401
        assert (await http.post("/v1/credentials/rotate", headers=bearer(old))).status_code == 401
        assert (await http.get("/v1/audit/reviews", headers=bearer(new))).status_code == 200


async def test_rotation_keeps_role_subject_and_agency(api: str, database: str) -> None:
    old = _key(database, Role.ADVOCATE, "adv-rotate", "harbor-outreach")
    admin = _key(database, Role.ADMIN, "admin-rotate")
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        new = (await http.post("/v1/credentials/rotate", headers=bearer(old))).json()["api_key"]
        listed = await http.get(
            "/v1/admin/credentials", params={"subject": "adv-rotate"}, headers=bearer(admin)
        )
        rows = {row["id"]: row for row in listed.json()}
        assert rows[old.split("_")[1]]["revoked_at"] is not None
        fresh = rows[new.split("_")[1]]
        assert fresh["revoked_at"] is None
        assert (fresh["role"], fresh["agency_id"]) == ("advocate", "harbor-outreach")
        assert "secret" not in str(listed.json()).lower()
        sv = f"sv-{uuid.uuid4().hex[:10]}"
        r = await http.post("/v1/survivors", json={"survivor_id": sv}, headers=bearer(new))
        assert r.status_code == 201 and r.json()["agency_id"] == "harbor-outreach"


async def test_admin_revokes_a_key_and_it_stops_at_once(api: str, database: str) -> None:
    victim = _key(database, Role.PARTNER, "lighthouse-shelter")
    admin = _key(database, Role.ADMIN, "admin-revoke")
    victim_id = victim.split("_")[1]
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        assert (await http.get("/v1/feed", headers=bearer(victim))).status_code == 200
        r = await http.post(f"/v1/admin/credentials/{victim_id}/revoke", headers=bearer(admin))
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        assert (await http.get("/v1/feed", headers=bearer(victim))).status_code == 401
        again = await http.post(f"/v1/admin/credentials/{victim_id}/revoke", headers=bearer(admin))
        assert again.status_code == 200  # idempotent
        missing = await http.post(
            "/v1/admin/credentials/00000000000000aa/revoke", headers=bearer(admin)
        )
        assert missing.status_code == 404
        # Nobody but an admin revokes others' keys: the revoked partner's peer cannot.
        peer = _key(database, Role.PARTNER, "northside-clinic")
        r = await http.post(
            f"/v1/admin/credentials/{admin.split('_')[1]}/revoke", headers=bearer(peer)
        )
        assert r.status_code == 403


# --- TLS ---------------------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
async def tls_api(
    settings: Settings, database: str, tmp_path: Path
) -> AsyncIterator[tuple[str, Path]]:
    """`accord api` in a process of its own, with ACCORD_API_TLS_CERT/KEY set."""
    cert, key = self_signed(tmp_path)
    s = own_instance(settings)
    await kafka_ready(s)
    env = api_env(s, ACCORD_API_TLS_CERT=str(cert), ACCORD_API_TLS_KEY=str(key))
    async with accord_api(s, tmp_path / "api.log", env=env):
        yield f"127.0.0.1:{s.api_port}", cert


async def test_accord_api_serves_https(tls_api: tuple[str, Path], settings: Settings) -> None:
    address, cert = tls_api
    trust = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=trust, timeout=5) as https:
        for _ in range(150):
            try:
                r = await https.get(f"https://{address}/openapi.json")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.2)
        else:
            pytest.fail("accord api never answered over TLS")
        assert r.status_code == 200 and r.json()["info"]["title"] == "Accord API"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert (await https.get(f"https://{address}/v1/feed")).status_code == 401
    async with httpx.AsyncClient(timeout=5) as plain:  # no plain HTTP on the TLS port
        with pytest.raises(httpx.TransportError):
            await plain.get(f"http://{address}/openapi.json")
    async with httpx.AsyncClient(timeout=5) as untrusting:  # and the certificate is checked
        with pytest.raises(httpx.ConnectError):
            await untrusting.get(f"https://{address}/openapi.json")
