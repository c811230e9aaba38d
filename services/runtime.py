"""Wiring of the long-running processes (relay, API), for the CLI, the demo and the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import uvicorn

from services.api import create_app
from services.broker import topics
from services.broker.pipeline.decide import OpaPolicy, Policy
from services.broker.pipeline.decide_wasm import WasmPolicy, build_module
from services.broker.pipeline.seal import Sealer
from services.broker.pipeline.validate import SchemaRegistry
from services.broker.registry import SqlRegistry
from services.broker.relay import Clock, Relay, utcnow
from services.broker.replay import SeenEvents
from services.broker.survivor_keys import SqlSurvivorKeys
from services.consent.view import KafkaConsentView
from services.db import make_engine, make_sessionmaker
from services.devstack import opa
from services.http_security import server_options
from services.kafka_client import RELAY, kafka
from services.keys import kek_ring, relay_key
from services.settings import Settings


async def policy_engine(s: Settings, server: OpaPolicy) -> Policy:
    """The OPA server, or the same policy tree compiled to WebAssembly with the server behind
    it for what the module cannot answer (``ACCORD_POLICY_ENGINE``)."""
    if s.policy_engine == "opa":
        return server
    wasm, data = await asyncio.to_thread(
        build_module, opa.binary(s), s.policies_dir, s.state_dir / "wasm"
    )
    # The server is started with the revision as data.accord.meta (services/devstack/opa.py).
    data.setdefault("accord", {})["meta"] = {"revision": opa.policy_revision(s.policies_dir)}
    return WasmPolicy(wasm, data, fallback=server, workers=s.opa_concurrency)


@asynccontextmanager
async def running_relay(s: Settings, *, clock: Clock = utcnow) -> AsyncIterator[asyncio.Task[None]]:
    """Start a relay as a task on the current loop; stop it (cleanly) on exit."""
    await topics.ensure_topics(kafka(s, RELAY), topics.core_topics(s))
    engine = make_engine(s.sqlalchemy_url)
    sessions = make_sessionmaker(engine, kek_ring=kek_ring(s))
    keys = SqlSurvivorKeys(sessions)
    view = KafkaConsentView(
        kafka(s, RELAY), s.topic_consents, keys=keys, required=s.kafka_sealing == "required"
    )
    await view.start()
    seen = SeenEvents(kafka(s, RELAY), s.topic_seen, window=timedelta(seconds=s.replay_window_s))
    await seen.start()
    stop = asyncio.Event()
    try:
        async with OpaPolicy(s.opa_base_url, timeout_s=s.opa_timeout_s) as server:
            relay = Relay(
                s,
                registry=SqlRegistry(sessions),
                keys=keys,
                consents=view,
                policy=await policy_engine(s, server),
                schemas=SchemaRegistry(s.schemas_dir / "events"),
                seen=seen,
                sealer=Sealer(relay_key(s)),
                clock=clock,
            )
            task = asyncio.create_task(relay.run(stop), name="relay")
            try:
                yield task
            finally:
                stop.set()
                await task
    finally:
        await view.stop()
        await seen.stop()
        engine.dispose()


@asynccontextmanager
async def running_api(s: Settings) -> AsyncIterator[str]:
    """Serve the API with uvicorn on the current loop; yields its base URL."""
    config = uvicorn.Config(
        create_app(s),
        host=s.api_host,
        port=s.api_port,
        log_level="warning",
        lifespan="on",
        **server_options(s),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="api")
    while not server.started:
        if task.done():
            task.result()  # raises the startup error
        await asyncio.sleep(0.05)
    try:
        yield f"http://{s.api_host}:{s.api_port}"
    finally:
        server.should_exit = True
        await task
