"""HTTP hardening for the Accord API, as one ASGI middleware (``HttpSecurity``):

- **Rate limits on failures only.** Authentication failures (any 401) are counted per client
  IP and per credential id (the ``<id>`` of ``acc_<id>_<secret>``, or of an enrollment code);
  failed enrollments also per client IP, on a tighter budget. Once a bucket is empty, a
  further *failure* from that IP or for that id answers 429 with ``Retry-After`` instead of
  401, until the bucket refills. A valid key or code always passes: others' failures (behind
  a proxy or a NAT every client shares an address; anyone may send a wrong secret with a
  known key id) never lock anyone out. Guessing stays hopeless (keys carry 256 random bits,
  enrollment codes 64 bits for 15 minutes); the 429 tells a client to stop. Token buckets,
  in memory, per process (several processes behind a balancer each keep their own).
- **Request size.** A body over ``max_event_bytes`` answers 413, whether the client declared
  a ``Content-Length`` or streamed it chunked (the body is counted as it arrives).
- **Security headers** on every response (the dashboard sets its own stricter CSP first).
- **Access log** without request content: method, route template (``/v1/survivors/
  {survivor_id}/consents``, never the path or query sent), status and duration, as one JSON
  line per request (uvicorn's own access log, which prints the path and query, is off).
- **TLS.** ``tls_options`` turns ``api_tls_cert``/``api_tls_key`` into uvicorn's arguments.

The client IP is the socket's peer. Behind a reverse proxy, run ``accord api --proxy-headers
--forwarded-allow-ips <proxy>``: uvicorn then takes the client from ``X-Forwarded-For`` only
on connections from those addresses (``server_options``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.observability.metrics import API_AUTH_FAILURES, API_RATE_LIMITED
from services.settings import Settings

log = logging.getLogger("accord.api.access")

ENROLL_PATH = "/v1/enroll"
# Probes and scrapes (services/observability/views.py): answered every few seconds, not logged.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_TRACKED_KEYS = 50_000  # per bucket set; the least recently used are forgotten beyond this

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# For everything that is not an HTML page (the API's JSON): nothing may be loaded or framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000"


@dataclass
class TokenBuckets:
    """One token bucket per key: ``capacity`` tokens, refilled at ``per_minute`` a minute."""

    per_minute: float
    capacity: float
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.per_minute / 60.0)

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token again (0: it has one now)."""
        level = self._level(key, now)
        if level >= 1.0:
            return 0.0
        return (1.0 - level) * 60.0 / self.per_minute

    def take(self, key: str, now: float) -> None:
        level = self._level(key, now)
        self._buckets[key] = (max(0.0, level - 1.0), now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_TRACKED_KEYS:
            self._buckets.popitem(last=False)


def _buckets(per_minute: int) -> TokenBuckets:
    return TokenBuckets(per_minute=float(per_minute), capacity=float(per_minute))


def credential_id(authorization: str | None) -> str | None:
    """The id part of ``Bearer acc_<id>_<secret>`` (whether or not the key is valid)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    prefix, _, rest = token.strip().partition("_")
    key_id = rest.partition("_")[0]
    if prefix != "acc" or not key_id:
        return None
    return f"key:{key_id[:64]}"


def enrollment_code_id(body: bytes) -> str | None:
    """The id part of an enrollment code ``<id>-<secret>`` in a ``/v1/enroll`` body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    code = doc.get("code") if isinstance(doc, dict) else None
    if not isinstance(code, str) or "-" not in code:
        return None
    return f"code:{code.strip().partition('-')[0][:64]}"


def server_options(s: Settings) -> dict[str, Any]:
    """uvicorn's arguments for the client address (proxy headers from trusted forwarders
    only) and for its access log (off: ``HttpSecurity`` writes one without the path)."""
    return {
        "proxy_headers": s.api_proxy_headers,
        "forwarded_allow_ips": s.api_forwarded_allow_ips,
        "access_log": False,
    }


def tls_options(s: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments from settings: both files or neither."""
    if bool(s.api_tls_cert) != bool(s.api_tls_key):
        raise ValueError("Set both ACCORD_API_TLS_CERT and ACCORD_API_TLS_KEY, or neither.")
    if not s.api_tls_cert:
        return {}
    return {"ssl_certfile": s.api_tls_cert, "ssl_keyfile": s.api_tls_key}


class _TooLarge(Exception):
    pass


class HttpSecurity:
    """Pure ASGI middleware: rate limits, body size, security headers (see the module doc)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_bytes = settings.max_event_bytes
        self.failures_by_ip = _buckets(settings.auth_failures_per_minute)
        self.failures_by_key = _buckets(settings.auth_failures_per_minute)
        self.enroll_by_ip = _buckets(settings.enroll_per_minute)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        secure = scope.get("scheme") == "https"
        client = scope.get("client")
        ip = f"ip:{client[0] if client else 'unknown'}"
        enroll = scope["path"] == ENROLL_PATH and scope["method"] == "POST"

        # The body, read whole (it is small: at most max_bytes), counted as it streams in.
        try:
            body = await self._read_body(headers, receive)
        except _TooLarge:
            await self._answer(
                send,
                413,
                {"detail": f"Request body over the {self.max_bytes}-byte limit."},
                secure=secure,
            )
            return

        key = credential_id(headers.get("authorization"))
        if enroll:
            key = enrollment_code_id(body)
        started = time.monotonic()
        status = 500  # what the log says if the app fails before it answers
        sent = False
        throttled = False  # this request failed authentication with an empty bucket

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_secured(message: Message) -> None:
            nonlocal status, throttled
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 401:
                    wait = self._failed(ip, key, enroll=enroll, now=time.monotonic())
                    if wait == 0:
                        API_AUTH_FAILURES.inc()
                    else:  # answered 429 instead: counted as such
                        API_RATE_LIMITED.inc()
                        throttled, status = True, 429
                        await self._answer(
                            send,
                            429,
                            {"detail": "Too many failed attempts; retry later."},
                            secure=secure,
                            extra={"Retry-After": str(max(1, math.ceil(wait)))},
                        )
                        return
                message["headers"] = _secured(list(message.get("headers", [])), secure)
            elif throttled:
                return  # the body of the 401 that the 429 replaced
            await send(message)

        try:
            await self.app(scope, replay, send_secured)
        finally:
            if scope["path"] not in QUIET_PATHS:
                self._log(scope, status, started)

    @staticmethod
    def _log(scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        log.info(
            "request",
            extra={
                "method": scope["method"],
                # The template, never the path: path and query may carry what was sent.
                "route": getattr(route, "path", None) or "(no route)",
                "status": status,
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        )

    def _failed(self, ip: str, key: str | None, *, enroll: bool, now: float) -> float:
        """Count one authentication failure; seconds to wait if a bucket was already empty
        (0: answer the 401 as it is)."""
        buckets = [(self.failures_by_ip, ip)]
        if key:
            buckets.append((self.failures_by_key, key))
        if enroll:
            buckets.append((self.enroll_by_ip, ip))
        wait = max(b.wait(k, now) for b, k in buckets)
        for b, k in buckets:
            b.take(k, now)
        return wait

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise _TooLarge
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the app will see an empty body
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _answer(
        self,
        send: Send,
        status: int,
        doc: dict[str, Any],
        *,
        secure: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(doc).encode()
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in (extra or {}).items()),
        ]
        await send(
            {"type": "http.response.start", "status": status, "headers": _secured(raw, secure)}
        )
        await send({"type": "http.response.body", "body": body})


def _secured(raw: list[tuple[bytes, bytes]], secure: bool) -> list[tuple[bytes, bytes]]:
    """Add the security headers a response does not already set."""
    present = {k.lower() for k, _ in raw}
    content_type = next((v for k, v in raw if k.lower() == b"content-type"), b"")
    wanted = dict(SECURITY_HEADERS)
    if not content_type.startswith(b"text/html"):
        wanted["Content-Security-Policy"] = API_CSP
    if secure:
        wanted["Strict-Transport-Security"] = HSTS
    for name, value in wanted.items():
        if name.lower().encode() not in present:
            raw.append((name.lower().encode(), value.encode()))
    return raw
