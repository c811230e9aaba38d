"""Moving referrals, for partners (and the agency that made them), over the HTTP API.

A referral reaches a partner as a sealed ``accord.referral.made`` delivery followed by an
unsealed ``accord.referral_state.delivered`` notice naming the referral (``Delivery.referral_id``;
its ``event_id`` is the delivery's). Then::

    referrals = Referrals("https://accord.example", api_key="acc_...")
    await referrals.acknowledge(referral_id)
    await referrals.decline(referral_id, "no_capacity", note="No bed until Friday.")

A refused move raises ``ReferralRefused`` with Accord's status and sentence (409: not a move
from the referral's state, the transition named; 404: not a referral you were delivered).
"""

from __future__ import annotations

from typing import Any

import httpx

from services.sdk.answers import AccordRefused, answer


class ReferralRefused(AccordRefused):
    what = "referral move refused"


class Referrals:
    def __init__(
        self, base_url: str, *, api_key: str, client: httpx.AsyncClient | None = None
    ) -> None:
        self._http = client or httpx.AsyncClient(base_url=base_url, timeout=30)
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        return await answer(
            self._http, method, path, headers=self._headers, refused=ReferralRefused, **kw
        )

    async def list(self, *, state: str | None = None) -> list[dict[str, Any]]:
        """Your referrals (a partner: those delivered to you), newest first."""
        params = {"state": state} if state else {}
        found: list[dict[str, Any]] = await self._call("GET", "/v1/referrals", params=params)
        return found

    async def get(self, referral_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("GET", f"/v1/referrals/{referral_id}")
        return found

    async def move(
        self, referral_id: str, action: str, *, code: str | None = None, note: str | None = None
    ) -> dict[str, Any]:
        body = {k: v for k, v in {"code": code, "note": note}.items() if v is not None}
        moved: dict[str, Any] = await self._call(
            "POST", f"/v1/referrals/{referral_id}/{action}", json=body
        )
        return moved

    async def acknowledge(self, referral_id: str) -> dict[str, Any]:
        return await self.move(referral_id, "acknowledge")

    async def accept(self, referral_id: str) -> dict[str, Any]:
        return await self.move(referral_id, "accept")

    async def decline(
        self, referral_id: str, reason: str, *, note: str | None = None
    ) -> dict[str, Any]:
        return await self.move(referral_id, "decline", code=reason, note=note)

    async def complete(self, referral_id: str, outcome: str) -> dict[str, Any]:
        return await self.move(referral_id, "complete", code=outcome)

    async def close(self, referral_id: str, reason: str) -> dict[str, Any]:
        return await self.move(referral_id, "close", code=reason)

    async def withdraw(self, referral_id: str, reason: str | None = None) -> dict[str, Any]:
        """The referring agency's move."""
        return await self.move(referral_id, "withdraw", code=reason)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Referrals:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
