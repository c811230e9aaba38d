"""Accord's HTTP answers as the SDK's clients read them: JSON, or an error that carries the
status and Accord's one sentence (``detail``; its error bodies never echo what was sent)."""

from __future__ import annotations

from typing import Any

import httpx


class AccordRefused(RuntimeError):
    """Accord answered with an error status."""

    what = "Accord answered"

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{self.what} ({status}): {detail}")
        self.status = status
        self.detail = detail


async def answer(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    refused: type[AccordRefused],
    **kw: Any,
) -> Any:
    """The JSON of a successful answer; ``refused`` raised for a status of 400 or above."""
    response = await http.request(method, path, headers=headers, **kw)
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise refused(response.status_code, detail)
    return response.json()
