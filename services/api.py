"""The Accord HTTP API: one FastAPI app, every route authenticated.

Routers come from their domains (``services/broker/ingest.py``, ...); this module only wires
settings, the database, the Kafka producer and limits together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.broker import ingest
from services.broker.pipeline.validate import SchemaRegistry
from services.db import make_engine, make_sessionmaker
from services.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(s.sqlalchemy_url)
        app.state.sessions = make_sessionmaker(engine)
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers, acks="all", enable_idempotence=True
        )
        await producer.start()
        app.state.producer = producer
        try:
            yield
        finally:
            await producer.stop()
            engine.dispose()

    app = FastAPI(
        title="Accord API",
        version="0.1.0",
        description="Consent-governed sharing of case events between agencies serving "
        "survivors of human trafficking. Every endpoint needs an API key (Bearer).",
        lifespan=lifespan,
    )
    app.state.settings = s
    app.state.schemas = SchemaRegistry(s.schemas_dir / "events")

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > s.max_event_bytes:
            return JSONResponse(
                {"detail": f"Request body over the {s.max_event_bytes}-byte limit."},
                status_code=413,
            )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Say where the request is wrong, never echo what it contained (it may be case data).
        errors = [
            {"loc": [str(part) for part in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    app.include_router(ingest.router)
    return app
