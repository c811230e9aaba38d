"""The API's ``/healthz``, ``/readyz`` and ``/metrics``: public, and they say nothing private.

No API key: load balancers and Prometheus call them. They answer check names, true/false and
metrics with bounded labels (``services/observability/metrics.py``), never a secret, an
address or case data. They never answer 401, so they never count as authentication failures
in the rate limits (``services/http_security.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from services.observability.readiness import Check, readiness

# Not in the OpenAPI document: that describes the API to agencies, partners and staff; these
# are for probes and Prometheus (docs/operations.md), and /readyz's 503 is its answer, not a
# server fault for the schemathesis run to report.
router = APIRouter(tags=["operations"], include_in_schema=False)


class Alive(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]


@router.get("/healthz", summary="The process is alive", response_model=Alive)
async def healthz() -> Alive:
    return Alive(status="ok")


@router.get(
    "/readyz",
    summary="Kafka, the database and OPA answer",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency does not answer."}},
)
async def readyz(request: Request) -> Any:
    checks: dict[str, Check] = request.app.state.readiness_checks
    result = await readiness(checks)
    ok = all(result.values())
    body = Readiness(ready=ok, checks=result).model_dump()
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
async def metrics() -> Response:
    # generate_latest only reads in-memory values: it does not block the loop.
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
