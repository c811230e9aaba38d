"""The workers' health port: ``/healthz``, ``/readyz`` and ``/metrics`` on aiohttp.

aiohttp (already a dependency, through the OPA client) serves on the worker's own event loop
without taking over its signals, and prometheus-client ships its handler. The answers carry
no secrets and no case data: check names and true/false, and the metrics (bounded labels).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from services.observability.readiness import Ready

log = logging.getLogger("accord.health")


def health_app(ready: Ready) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        checks = await ready()
        ok = all(checks.values())
        return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler())
    return app


@asynccontextmanager
async def running_health(host: str, port: int, ready: Ready) -> AsyncIterator[int]:
    """Serve the health port while inside; yields the bound port (``port`` 0: one the OS
    picks, for several instances on one host)."""
    runner = web.AppRunner(health_app(ready), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        log.info("health port listening", extra={"host": host, "port": bound})
        yield int(bound)
    finally:
        await runner.cleanup()


async def serve_health(host: str, port: int, ready: Ready, stop: asyncio.Event) -> None:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` until ``stop`` is set."""
    async with running_health(host, port, ready):
        await stop.wait()
