"""Wiring of the long-running processes (relay, sink worker, API, audit checkpointer), for the
CLI, the demo and the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

import uvicorn
from sqlalchemy import Engine

from services.api import create_app
from services.atrest.keys import kek_ring, relay_key
from services.audit import health
from services.audit.chain import Signer
from services.audit.checkpoints import Checkpointer
from services.audit.witness import KafkaWitness, witness_topic
from services.broker.consent_view import KafkaConsentView
from services.broker.pipeline.decide import FailoverPolicy, OpaPolicy, Policy
from services.broker.pipeline.decide_wasm import WasmPolicy, build_module
from services.broker.pipeline.reuse import ReuseStore
from services.broker.pipeline.seal import Sealer
from services.broker.pipeline.validate import SchemaRegistry
from services.broker.registry import SqlRegistry
from services.broker.relay import Clock, Relay, utcnow
from services.broker.replay import SeenEvents
from services.broker.survivor_keys import SqlSurvivorKeys
from services.db import make_engine, make_sessionmaker
from services.devstack import opa
from services.http_security import server_options
from services.kafka import topics
from services.kafka.client import CHECKPOINTER, RELAY, kafka
from services.observability.readiness import Check, OpaCheck, readiness, standard_checks
from services.observability.server import running_health
from services.referrals import service as referrals
from services.settings import Settings
from services.sink_worker import running_sinks  # re-exported: the tests and the demo use it

__all__ = ["policy_engine", "running_api", "running_checkpointer", "running_relay", "running_sinks"]


async def policy_engine(s: Settings, server: Policy) -> Policy:
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


async def opa_servers(s: Settings, stack: AsyncExitStack) -> Policy:
    """The OPA server of ``s``, or with several (``ACCORD_OPA_URLS``) all of them behind a
    ``FailoverPolicy``; each server's client is closed with ``stack``."""
    servers: list[Policy] = [
        await stack.enter_async_context(OpaPolicy(url, timeout_s=s.opa_timeout_s))
        for url in s.opa_base_urls
    ]
    if len(servers) == 1:
        return servers[0]
    return FailoverPolicy(servers, cooldown_s=s.opa_failover_cooldown_s)


def any_of(checks: list[OpaCheck]) -> Check:
    """True if one of the OPA servers answers (a relay with several fails over to it)."""

    async def check() -> bool:
        for one in checks:
            try:
                if await one():
                    return True
            except Exception:  # noqa: S112 - unreachable: ask the next server
                continue
        return False

    return check


def relay_checks(relay: Relay, engine: Engine, opa_check: Check) -> dict[str, Check]:
    """The relay is ready when Kafka, the database and OPA answer, it has inbound partitions
    and it is not holding a batch."""

    async def topics_of_consumer() -> object:
        if relay.consumer is None:
            raise RuntimeError("the relay's consumer is not started")
        return await relay.consumer.topics()

    async def assigned() -> bool:
        return relay.consumer is not None and bool(relay.consumer.assignment())

    async def not_holding() -> bool:
        return relay.held_cause is None

    return {
        **standard_checks(metadata=topics_of_consumer, engine=engine, opa=opa_check),
        "partitions_assigned": assigned,
        "not_holding": not_holding,
    }


@asynccontextmanager
async def running_relay(
    s: Settings, *, clock: Clock = utcnow, health_port: int | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """Start a relay as a task on the current loop; stop it (cleanly) on exit. With
    ``health_port`` (0: any free port), serve its /healthz, /readyz and /metrics too."""
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
        async with AsyncExitStack() as servers:
            server = await opa_servers(s, servers)
            relay = Relay(
                s,
                registry=SqlRegistry(sessions, referrals.addressed_payloads),
                keys=keys,
                consents=view,
                policy=await policy_engine(s, server),
                schemas=SchemaRegistry(s.schemas_dir / "events"),
                seen=seen,
                sealer=Sealer(relay_key(s)),
                clock=clock,
                reuse=ReuseStore(s.decision_reuse_entries) if s.decision_reuse_entries else None,
            )
            task = asyncio.create_task(relay.run(stop), name="relay")
            try:
                async with AsyncExitStack() as health:
                    if health_port is not None:
                        opa_checks = [OpaCheck(url) for url in s.opa_base_urls]
                        for opa_check in opa_checks:
                            health.push_async_callback(opa_check.aclose)
                        checks = relay_checks(relay, engine, any_of(opa_checks))
                        await health.enter_async_context(
                            running_health(
                                s.relay_health_host, health_port, lambda: readiness(checks)
                            )
                        )
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
        log_config=None,  # the process's own (JSON) logging, not uvicorn's coloured lines
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


@asynccontextmanager
async def running_checkpointer(
    s: Settings, signer: Signer | None = None, *, health_port: int | None = None
) -> AsyncIterator[Checkpointer]:
    """Start the audit checkpointer as a task on the current loop (the signer: the key file
    of ``s``, or the one given); stop it on exit. Fenced by a newer one, its task ends. With
    ``health_port`` (0: any free port), serve its /healthz, /readyz and /metrics too."""
    if signer is None:
        signer = await asyncio.to_thread(_file_signer, s)
    conn = kafka(s, CHECKPOINTER)
    await topics.ensure_topics(conn, [witness_topic(s)])
    engine = make_engine(s.sqlalchemy_url)
    witness = KafkaWitness(conn, s.topic_audit_checkpoints, s.audit_checkpointer_transactional_id)
    checkpointer = await asyncio.to_thread(
        Checkpointer.for_settings, s, make_sessionmaker(engine), signer, witness
    )
    stop = asyncio.Event()
    try:
        await checkpointer.start()
        task = asyncio.create_task(checkpointer.run(stop), name="audit-checkpointer")
        checkpointer.task = task
        try:
            async with AsyncExitStack() as served:
                if health_port is not None:
                    await served.enter_async_context(
                        running_health(
                            s.audit_checkpointer_health_host, health_port, health.readiness
                        )
                    )
                yield checkpointer
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await witness.stop()
        engine.dispose()


def _file_signer(s: Settings) -> Signer:
    from services.audit import signing

    if not s.audit_signing_key_file:
        signing.create_dev_key(s)  # development: <state_dir>/keys/audit.key, made once
    return signing.FileSigner(signing.signing_key_path(s))
