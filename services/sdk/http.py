"""The HTTP pull feed (``GET /v1/feed``, ``POST /v1/feed/ack``) as a ``Source``."""

from __future__ import annotations

from typing import Any

import httpx

from services.sdk.answers import AccordRefused, answer
from services.sdk.source import RawItem


class FeedError(AccordRefused):
    """The feed answered with an error (the status code and Accord's message)."""

    what = "feed answered"


class HttpFeed:
    """Reads pages of the feed, continuing from the last page by cursor; acks by cursor."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        limit: int = 100,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._http = client or httpx.AsyncClient(base_url=base_url, timeout=60)
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._limit = limit
        self._cursor: str | None = None  # None: start at the acknowledged position

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        return await answer(
            self._http, method, path, headers=self._headers, refused=FeedError, **kw
        )

    async def fetch(self, *, wait_s: float) -> list[RawItem]:
        params: dict[str, Any] = {"limit": self._limit, "wait": min(max(wait_s, 0), 20)}
        if self._cursor:
            params["cursor"] = self._cursor
        page = await self._call("GET", "/v1/feed", params=params)
        self._cursor = page["cursor"]
        return [
            RawItem(i["delivery_id"], i["record"].encode("utf-8"), i["cursor"])
            for i in page["items"]
        ]

    async def ack(self, item: RawItem) -> None:
        await self._call("POST", "/v1/feed/ack", json={"cursor": item.token})

    async def ack_ids(self, delivery_ids: list[str]) -> list[str]:
        """Acknowledge by id (in any order); returns the ids the feed did not find unacked."""
        got = await self._call("POST", "/v1/feed/ack", json={"delivery_ids": delivery_ids})
        return list(got.get("not_found", []))

    async def reset(self) -> None:
        self._cursor = None

    async def close(self) -> None:
        await self._http.aclose()
