"""The dashboard's browser session: a signed cookie that names a credential, never holds it.

A browser cannot send ``Authorization: Bearer`` from a plain page, so compliance staff paste
their API key once into ``/dashboard/login``; the cookie then carries only the credential's id,
when it was issued, and the session's CSRF token, signed with HMAC-SHA256. The credential is
looked up again on every request, so revoking the key ends the session at once.

The signing secret is ``ACCORD_DASHBOARD_SECRET`` (any string of 32+ characters); without it a
random secret is made per process, which logs everyone out when the API restarts and does not
work behind several API processes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

COOKIE = "accord_dashboard"
LOGIN_CSRF_COOKIE = "accord_dashboard_login"
MAX_AGE_S = 8 * 3600  # a session lasts a working day at most, whatever the key


@lru_cache(maxsize=1)
def _secret() -> bytes:
    configured = os.environ.get("ACCORD_DASHBOARD_SECRET", "")
    if configured:
        if len(configured) < 32:
            raise RuntimeError("ACCORD_DASHBOARD_SECRET must be at least 32 characters.")
        return hashlib.sha256(b"accord-dashboard\x00" + configured.encode()).digest()
    return secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(payload: str) -> str:
    return _b64(hmac.new(_secret(), payload.encode(), hashlib.sha256).digest())


@dataclass(frozen=True)
class BrowserSession:
    credential_id: str
    issued_at: int
    csrf: str


def issue(credential_id: str, now: float | None = None) -> tuple[BrowserSession, str]:
    """A new session (a fresh CSRF token) and its cookie value."""
    session = BrowserSession(
        credential_id, int(now if now is not None else time.time()), secrets.token_urlsafe(32)
    )
    body = {"c": session.credential_id, "t": session.issued_at, "x": session.csrf}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return session, f"{payload}.{_mac(payload)}"


def read(cookie: str | None, now: float | None = None) -> BrowserSession | None:
    """The session a cookie holds, or None if it is missing, forged, malformed or expired."""
    if not cookie or cookie.count(".") != 1:
        return None
    payload, mac = cookie.split(".")
    if not hmac.compare_digest(mac, _mac(payload)):
        return None
    try:
        body = json.loads(_unb64(payload))
        session = BrowserSession(str(body["c"]), int(body["t"]), str(body["x"]))
    except (ValueError, KeyError, TypeError):
        return None
    age = (now if now is not None else time.time()) - session.issued_at
    if age < 0 or age > MAX_AGE_S:
        return None
    return session


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens, neither of which may be empty."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def login_token() -> str:
    return secrets.token_urlsafe(32)
