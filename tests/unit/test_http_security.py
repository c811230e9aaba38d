"""The HTTP hardening middleware (services/http_security.py) on a tiny app: token buckets per
client IP and per credential id, 429 + Retry-After, the body limit for declared and chunked
bodies, security headers, and the TLS settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from services.http_security import (
    HttpSecurity,
    TokenBuckets,
    credential_id,
    enrollment_code_id,
    server_options,
    tls_options,
)
from services.settings import Settings

GOOD = "acc_00000000000000aa_good"


def make_app(**over: int) -> FastAPI:
    s = Settings(
        max_event_bytes=1000,
        auth_failures_per_minute=over.get("failures", 3),
        enroll_per_minute=over.get("enroll", 2),
    )
    app = FastAPI()
    app.add_middleware(HttpSecurity, settings=s)

    @app.get("/private")
    def private(request: Request) -> dict[str, str]:
        if request.headers.get("authorization") != f"Bearer {GOOD}":
            raise HTTPException(401, detail="no")
        return {"ok": "yes"}

    @app.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, int]:
        return {"length": len(item_id)}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/v1/enroll")
    async def enroll(request: Request) -> dict[str, str]:
        body = await request.json()
        if body.get("code") != "c1-right":
            raise HTTPException(401, detail="bad code")
        return {"api_key": "acc_x_y"}

    return app


def client(app: FastAPI, ip: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_failures_per_ip_then_429_with_retry_after() -> None:
    app = make_app(failures=3)
    async with client(app) as http:
        for i in range(3):
            r = await http.get("/private", headers=bearer(f"acc_{i:016x}_wrong"))
            assert r.status_code == 401
        r = await http.get("/private", headers=bearer("acc_00000000000000ff_wrong"))
        assert r.status_code == 429  # further failures from this IP wait for the bucket
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.json() == {"detail": "Too many failed attempts; retry later."}
    async with client(app, "10.0.0.2") as other:  # another IP's failures are not affected
        assert (await other.get("/private", headers=bearer("acc_1_wrong"))).status_code == 401


async def test_a_valid_key_passes_whatever_others_failed_from_its_address() -> None:
    """35 failures from one address (every client behind a proxy shares one): a valid key
    from that address is still served, and its successes do not refill the bucket."""
    app = make_app(failures=30)
    async with client(app) as http:
        codes = [
            (await http.get("/private", headers=bearer(f"acc_{i:016x}_wrong"))).status_code
            for i in range(35)
        ]
        assert codes == [401] * 30 + [429] * 5
        for _ in range(3):
            assert (await http.get("/private", headers=bearer(GOOD))).status_code == 200
        assert (await http.get("/private", headers=bearer("acc_2_wrong"))).status_code == 429


async def test_failures_per_credential_id_across_ips_never_lock_the_key_out() -> None:
    app = make_app(failures=3)
    target = "acc_00000000000000aa_"  # GOOD's id: anyone who knows it may send wrong secrets
    for n in range(3):  # a distributed guesser: a new IP each time, the same key id
        async with client(app, f"10.1.0.{n}") as http:
            r = await http.get("/private", headers=bearer(target + f"guess{n}"))
            assert r.status_code == 401
    async with client(app, "10.1.0.99") as http:
        assert (await http.get("/private", headers=bearer(target + "again"))).status_code == 429
        # The key itself still works, from a fresh IP and from one that guessed.
        assert (await http.get("/private", headers=bearer(GOOD))).status_code == 200
    async with client(app, "10.1.0.1") as http:
        assert (await http.get("/private", headers=bearer(GOOD))).status_code == 200


async def test_successes_cost_nothing() -> None:
    app = make_app(failures=2)
    async with client(app) as http:
        for _ in range(20):
            assert (await http.get("/private", headers=bearer(GOOD))).status_code == 200


async def test_enroll_failures_are_limited_per_ip_valid_codes_always_pass() -> None:
    app = make_app(enroll=2, failures=100)
    async with client(app) as http:
        for n in range(2):
            assert (await http.post("/v1/enroll", json={"code": f"c{n}-bad"})).status_code == 401
        r = await http.post("/v1/enroll", json={"code": "c7-bad"})
        assert r.status_code == 429 and "retry-after" in r.headers
        for _ in range(5):
            assert (await http.post("/v1/enroll", json={"code": "c1-right"})).status_code == 200
    async with client(app, "10.0.0.9") as other:
        assert (await other.post("/v1/enroll", json={"code": "c8-bad"})).status_code == 401


async def test_enroll_failures_count_against_the_code_id() -> None:
    app = make_app(enroll=100, failures=2)
    for n in range(2):
        async with client(app, f"10.2.0.{n}") as http:
            r = await http.post("/v1/enroll", json={"code": f"c9-guess{n}"})
            assert r.status_code == 401
    async with client(app, "10.2.0.50") as http:
        assert (await http.post("/v1/enroll", json={"code": "c9-more"})).status_code == 429
        assert (await http.post("/v1/enroll", json={"code": "c1-right"})).status_code == 200


async def test_body_limit_declared_and_chunked() -> None:
    app = make_app()

    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"x" * 100

    async with client(app) as http:
        assert (await http.post("/echo", content=b"x" * 1000)).json() == {"bytes": 1000}
        assert (await http.post("/echo", content=b"x" * 1001)).status_code == 413
        ok = await http.post("/echo", content=chunks(10))
        assert ok.json() == {"bytes": 1000}
        r = await http.post("/echo", content=chunks(11))  # no Content-Length: counted
        assert r.status_code == 413
        assert r.headers["cache-control"] == "no-store"


async def test_security_headers_on_every_response() -> None:
    app = make_app()
    async with client(app) as http:
        for r in (
            await http.get("/private", headers=bearer(GOOD)),
            await http.get("/private"),
            await http.get("/nowhere"),
        ):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["cache-control"] == "no-store"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert "strict-transport-security" not in r.headers  # plain HTTP here


def test_token_bucket_refills() -> None:
    b = TokenBuckets(per_minute=60, capacity=2)
    b.take("k", 0.0)
    b.take("k", 0.0)
    assert b.wait("k", 0.0) == pytest.approx(1.0)
    assert b.wait("k", 1.0) == 0.0


def test_ids_are_parsed_without_trusting_them() -> None:
    assert credential_id("Bearer acc_abc_def") == "key:abc"
    assert credential_id("Basic xyz") is None
    assert credential_id("Bearer nonsense") is None
    assert enrollment_code_id(b'{"code": "k1-secret"}') == "code:k1"
    assert enrollment_code_id(b"not json") is None
    assert enrollment_code_id(b'["k1-x"]') is None


def test_tls_options() -> None:
    assert tls_options(Settings(api_tls_cert="", api_tls_key="")) == {}
    both = tls_options(Settings(api_tls_cert="c.pem", api_tls_key="k.pem"))
    assert both == {"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem"}
    with pytest.raises(ValueError, match="both"):
        tls_options(Settings(api_tls_cert="c.pem", api_tls_key=""))


async def test_the_access_log_names_the_route_never_the_path_or_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    with caplog.at_level(logging.INFO, logger="accord.api.access"):
        async with client(app) as http:
            assert (await http.get("/items/Jane-Doe?near=12-Hidden-Lane")).status_code == 200
            assert (await http.get("/private", headers=bearer("acc_1_x"))).status_code == 401
            assert (await http.get("/nowhere/Jane-Doe")).status_code == 404
    lines = [(r.method, r.route, r.status) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [
        ("GET", "/items/{item_id}", 200),
        ("GET", "/private", 401),
        ("GET", "(no route)", 404),
    ]
    assert "Jane" not in caplog.text and "Hidden" not in caplog.text


def test_server_options_trust_forwarded_headers_only_when_asked() -> None:
    plain = server_options(Settings())
    assert plain["proxy_headers"] is False and plain["access_log"] is False
    behind = server_options(
        Settings(api_proxy_headers=True, api_forwarded_allow_ips="10.0.0.5,10.0.0.6")
    )
    assert behind["proxy_headers"] is True
    assert behind["forwarded_allow_ips"] == "10.0.0.5,10.0.0.6"
