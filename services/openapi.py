"""The API's OpenAPI document, completed once for every route (new routes included).

FastAPI documents what a route declares; the errors that come from elsewhere (the
authentication dependency, the role check, the body-size and rate-limit middleware, request
validation) it does not know about. ``install`` wraps ``app.openapi`` so that the document
names, for every operation, each error it can answer with, all with the one ``Error`` schema:

- 401 for an operation that takes an API key, 403 if it also checks the key's role
  (``services.auth.deps.require``, whose roles the description names);
- 400 (a body that cannot be read at all) and 413 for an operation with a request body;
  422 for one with parameters or a body;
- 429 for every operation (failed authentications are limited per address and per key);
- and whatever a route declares itself (``responses=errors(404, 503)`` or FastAPI's own
  ``responses={404: {"description": ...}}``): its description is kept, the schema is added.

Every error body is ``{"detail": "<a sentence>"}`` or ``{"detail": [<problem>, ...]}``, never an
echo of what was sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from services.auth.deps import role_check_roles


class Problem(BaseModel):
    """One thing wrong with a request: where (``loc``), what (``msg``), which kind (``type``)."""

    loc: list[str | int] = Field(description='Where, e.g. `["body", "provisions", 0, "type"]`.')
    msg: str = Field(description="What is wrong; never the value that was sent.")
    type: str = Field(description="A machine-readable kind, e.g. `missing`, `schema`.")


class Error(BaseModel):
    """Every error the API answers with (4xx and 5xx)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"detail": "A valid API key is required (Authorization: Bearer acc_...)."},
                {
                    "detail": [
                        {"loc": ["body", "survivor_id"], "msg": "Field required", "type": "missing"}
                    ]
                },
            ]
        }
    )

    detail: str | list[Problem] = Field(
        description="A sentence, or (for input that does not validate) every problem found."
    )


# What each code means wherever it appears; a route's own description, if any, wins.
DESCRIPTIONS: dict[int, str] = {
    400: "The body cannot be parsed (e.g. malformed for its content type)",
    401: "Missing, invalid, revoked or expired API key",
    403: "The key's role or owner may not do this",
    404: "No such resource (or not one this key may see)",
    409: "Conflicts with the current state",
    410: "The survivor's data was erased (accord keys erase): nothing new about them is accepted",
    413: "Request body over the configured size limit",
    422: "The request does not validate; `detail` says where, never what was sent",
    429: "Too many failed authentications from this address or for this key; see Retry-After",
    503: "A backing service (Kafka, OPA, the database) is unavailable; nothing was done, retry",
}
_GENERIC = {"Validation Error", "Unprocessable Content", "Unprocessable Entity", ""}
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's own error codes, with the shared descriptions."""
    return {code: {"description": DESCRIPTIONS[code]} for code in codes}


def _rfc3339(value: object) -> object:
    # pydantic alone would read `0.5` as a Unix time and `2026-01-01` as midnight; the document
    # says `format: date-time` (RFC 3339), so that is what is accepted.
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T12:00:00Z")
    return value


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
DateTimeParam = Annotated[datetime, BeforeValidator(_rfc3339)]
"""A query parameter that is an RFC 3339 date-time with an offset, nothing else."""


def _dependencies(d: Dependant) -> Iterator[Dependant]:
    for sub in d.dependencies:
        yield sub
        yield from _dependencies(sub)


def _api_routes(routes: list[Any]) -> Iterator[Any]:
    """The routes in the document, each with ``path_format``, ``methods`` and ``dependant``."""
    # FastAPI >= 0.160 keeps included routers whole; this is how its own document walks them.
    contexts = getattr(routing, "iter_route_contexts", None)
    for route in contexts(routes) if contexts is not None else routes:
        if getattr(route, "include_in_schema", False) and getattr(route, "dependant", None):
            yield route


def _roles(route: Any) -> frozenset[str] | None:
    found: set[str] = set()
    checked = False
    for d in _dependencies(route.dependant):
        roles = role_check_roles(d.call)
        if roles is not None:
            checked = True
            found |= roles
    return frozenset(found) if checked else None


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": ERROR_REF}}


def complete(doc: dict[str, Any], routes: list[Any]) -> None:
    """Add every error response, with the ``Error`` schema, to ``doc`` (in place)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    error_schema = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["Error"] = error_schema
    for route in _api_routes(routes):
        roles = _roles(route)
        for method in route.methods:
            op = doc["paths"][route.path_format][method.lower()]
            responses: dict[str, Any] = op["responses"]
            codes = {429}
            if op.get("security"):
                codes.add(401)
            if roles is not None:
                codes.add(403)
            if op.get("requestBody"):
                codes |= {400, 413, 422}
            if op.get("parameters"):
                codes.add(422)
            for number in codes:
                responses.setdefault(str(number), {})
            for key, response in responses.items():
                if key[0] not in "45":
                    continue
                number = int(key)
                if response.get("description", "") in _GENERIC:
                    response["description"] = DESCRIPTIONS.get(number, "Error")
                if number == 403 and roles and "needs the role" not in response["description"]:
                    response["description"] += f" (needs the role: {', '.join(sorted(roles))})"
                response["content"] = _error_content()
    # FastAPI's own 422 schema is replaced everywhere by Error.
    text = repr(doc["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}'" not in text:
            schemas.pop(unused, None)


def install(app: FastAPI) -> None:
    """Complete ``app``'s document whenever FastAPI (re)generates it: at the first request
    for it, and again if routes were added since (all routes are in by then)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        doc = generate()  # FastAPI's cached document, or a new one
        if not completed or completed[0] is not doc:
            complete(doc, app.routes)
            completed[:] = [doc]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
