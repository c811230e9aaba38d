"""``accord api`` as a process of its own, with the settings of a test, its output in a file:
for what only the real command shows (its options, TLS, what it logs)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from services.settings import Settings


def api_env(s: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives an ``accord api`` process the settings ``s``."""
    return {
        **os.environ,
        **{
            f"ACCORD_{name.upper()}": str(value)
            for name, value in s.model_dump().items()
            if isinstance(value, str | int | float | Path) and not isinstance(value, bool)
        },
        **extra,
    }


@asynccontextmanager
async def accord_api(
    s: Settings,
    log: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready: str | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``accord api *args`` until the block ends; with ``ready`` (a URL), wait until it
    answers. Its stdout and stderr go to ``log``."""
    accord = Path(sys.executable).parent / "accord"
    with log.open("w") as out:
        proc = await asyncio.create_subprocess_exec(
            str(accord), "api", *args, env=env or api_env(s), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            if ready is not None:
                await _wait_until_answering(ready, proc, log)
            yield proc
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), timeout=20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _wait_until_answering(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(300):
            if proc.returncode is not None:
                raise RuntimeError(f"accord api exited; its output is in {log}")
            try:
                await http.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    raise RuntimeError("accord api never answered")
