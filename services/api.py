"""The Accord HTTP API: one FastAPI app, every route authenticated.

Routers come from their domains (``services/broker/edges/ingest.py``,
``services/registry/views.py``, ...); this module only wires settings, the database, the Kafka
producer and limits together.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from services import openapi, policy_data
from services.atrest.keys import kek_ring
from services.atrest.store import SurvivorErased
from services.audit import store
from services.audit import views as audit_views
from services.audit.signing import appender_key
from services.audit.witness import audit_verification
from services.broker.edges import feed, ingest
from services.broker.edges import rejections as rejections_views
from services.broker.pipeline.decide import OpaPolicy
from services.broker.pipeline.validate import SchemaRegistry
from services.consent import fhir_views as consent_fhir_views
from services.consent import views as consent_views
from services.consent.audit_disclosures import AuditDisclosureLog
from services.consent.time_limits import TimeLimits
from services.contact import views as contact_views
from services.contact.renewal import schedule_renewal
from services.credentials import views as auth_views
from services.dashboard import views as dashboard_views
from services.db import make_engine, make_sessionmaker
from services.errors import DomainError
from services.http_security import HttpSecurity
from services.kafka.client import API, kafka
from services.kafka.sink import SinkProgress
from services.legal import views as legal_views
from services.observability import views as observability_views
from services.observability.readiness import OpaCheck, standard_checks
from services.referrals import oversight_views as referral_oversight_views
from services.referrals import views as referral_views
from services.referrals.disclosures import referral_disclosures
from services.referrals.publish import ReferralPublisher
from services.registry import views as registry_views
from services.settings import Settings
from services.sink_worker import audit_group
from services.snapshot.publisher import ConsentPublisher, Snapshots, republish_pending

log = logging.getLogger("accord.api")


async def _republish_forever(
    sessions: sessionmaker[Session],
    publisher: ConsentPublisher,
    referrals: ReferralPublisher,
    stop: asyncio.Event,
) -> None:
    """Consent changes saved while Kafka was away reach the relay once it is back; referral
    changes not published yet reach the referrals topic."""
    while not stop.is_set():
        try:
            await republish_pending(sessions, publisher)
        except Exception:  # keep trying; each attempt is logged
            log.exception("republishing consent snapshots failed")
        try:
            await referrals.publish_pending()
        except Exception:
            log.exception("publishing referral changes failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=2.0)
        except TimeoutError:
            pass


# A location part is a field name, an index, or a key the client chose (of a mapping, or an
# extra field): only name-shaped keys are repeated, anything else may be case data.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def _where(part: str | int) -> str:
    text = str(part)
    return text if isinstance(part, int) or _NAME.fullmatch(text) else "(key)"


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Verify only: the checkpointer is a worker of its own (`accord audit checkpointer`),
        # the one process that reads the checkpoint signing key (docs/audit.md). First, so that
        # a verify key not published yet stops the start before anything is opened.
        app.state.audit_verification = audit_verification(s)
        engine = make_engine(s.sqlalchemy_url)
        sessions = make_sessionmaker(engine, kek_ring=kek_ring(s))  # docs/at-rest.md
        store.with_appender(sessions, appender_key(s))  # audit entries signed (docs/audit.md)
        app.state.sessions = sessions
        producer = AIOKafkaProducer(**kafka(s, API).kwargs(), acks="all", enable_idempotence=True)
        await producer.start()
        app.state.producer = producer
        opa_check = OpaCheck(s.opa_base_url)
        # GET /readyz (services/observability/views.py)
        app.state.readiness_checks = standard_checks(
            metadata=producer.client.fetch_all_metadata, engine=engine, opa=opa_check
        )
        publisher = ConsentPublisher(producer, s.topic_consents)
        app.state.consent_publisher = publisher
        app.state.snapshots = Snapshots(sessions, publisher)
        referrals = ReferralPublisher(producer, s, sessions)  # services/referrals/publish.py
        app.state.referral_publisher = referrals
        # R14 reads releases from the audit chain (services/consent/audit_disclosures.py).
        app.state.disclosures = AuditDisclosureLog(
            sessions, policy_data.categorizer(s.policies_dir), more=referral_disclosures
        )
        # The sinks run in `accord sink`; a revocation waits for the audit sink's progress.
        audit = SinkProgress(kafka(s, API), s.topic_decisions, audit_group(s))
        await audit.start()
        app.state.audit_sink = audit
        stop = asyncio.Event()
        background = [
            asyncio.create_task(
                _republish_forever(sessions, publisher, referrals, stop), name="republish"
            ),
        ]
        try:
            async with OpaPolicy(s.opa_base_url, timeout_s=s.opa_timeout_s) as policy:
                app.state.policy = policy
                yield
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            await audit.stop()
            await producer.stop()
            await opa_check.aclose()
            engine.dispose()

    app = FastAPI(
        title="Accord API",
        version="0.1.0",
        description="Consent-governed sharing of case events between agencies serving "
        "survivors of human trafficking. Every endpoint needs an API key (Bearer).",
        lifespan=lifespan,
    )
    app.state.settings = s
    # Time-limited consent (R12): the limits' data, and the renewal notice once one is made.
    app.state.consent_time_limits = TimeLimits(s.policies_dir, schedule_renewal)
    app.state.schemas = SchemaRegistry(s.schemas_dir / "events")

    # Body size (declared or chunked), rate limits, security headers: services/http_security.py
    app.add_middleware(HttpSecurity, settings=s)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Say where the request is wrong, never echo what it contained (it may be case data).
        errors = [
            {"loc": [_where(part) for part in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(DomainError)
    async def refused(request: Request, exc: DomainError) -> Response:
        # Every domain's refusals, answered once: its status, the Error schema, its own message.
        return await http_exception_handler(request, HTTPException(exc.status, detail=exc.message))

    @app.exception_handler(SurvivorErased)
    async def erased(request: Request, exc: SurvivorErased) -> JSONResponse:
        # A tombstone (docs/at-rest.md): nothing new about an erased survivor is accepted.
        return JSONResponse(
            {
                "detail": "This survivor's data was erased (accord keys erase): nothing new "
                "about them is accepted or shared."
            },
            status_code=410,
        )

    @app.exception_handler(DataError)
    async def unstorable(request: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot store or compare (a NUL character, a number out of
        # range) is the request's fault, not the server's; the transaction was rolled back.
        return JSONResponse(
            {
                "detail": "A value in the request cannot be stored (a NUL character, or a "
                "number out of range)."
            },
            status_code=422,
        )

    app.include_router(ingest.router)
    app.include_router(registry_views.router)
    app.include_router(feed.router)
    app.include_router(rejections_views.router)
    app.include_router(consent_views.router)
    app.include_router(consent_fhir_views.router)
    app.include_router(contact_views.router)
    app.include_router(legal_views.router)
    app.include_router(referral_views.router)
    app.include_router(referral_oversight_views.router)
    app.include_router(audit_views.router)
    app.include_router(auth_views.router)
    app.include_router(dashboard_views.router)
    app.include_router(observability_views.router)
    openapi.install(app)  # every error of every route documented, one schema (services/openapi.py)
    return app
