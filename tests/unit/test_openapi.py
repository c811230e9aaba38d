"""The API's OpenAPI document is complete, so it cannot regress route by route.

Every operation has a description; every request body an example that validates against its
own schema; every error response the ``Error`` schema; every operation the errors it can
answer with whatever its route declares (401 with a key, 403 with a role check, 400 and 413
with a body, 422 with input, 429 always). A route added later gets the same without doing anything.
The document is built without starting the app (no database, Kafka or OPA).
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel, TypeAdapter, ValidationError

from services.api import create_app
from services.auth.deps import CurrentPrincipal, require
from services.auth.principals import Principal, Role
from services.openapi import DateTimeParam, Error, errors, install
from services.settings import Settings

METHODS = {"get", "put", "post", "patch", "delete"}
ERROR = {"$ref": "#/components/schemas/Error"}


def _operations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def test_every_operation_has_a_description(doc: dict[str, Any]) -> None:
    missing = [name for name, op in _operations(doc) if not op.get("description", "").strip()]
    assert len(_operations(doc)) > 30
    assert not missing


def _schema_validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    # The body's schema with the document's components, so its $refs resolve.
    return Draft202012Validator(
        {**schema, "components": doc["components"]}, format_checker=FormatChecker()
    )


def _examples(doc: dict[str, Any], media: dict[str, Any]) -> list[Any]:
    schema = media.get("schema", {})
    found = list(media.get("examples", {}).values()) if "examples" in media else []
    found += [media["example"]] if "example" in media else []
    found += schema.get("examples", [])
    ref = schema.get("$ref", "")
    if ref:
        found += doc["components"]["schemas"][ref.rsplit("/", 1)[1]].get("examples", [])
    return found


def test_every_request_body_has_an_example_that_matches_its_schema(doc: dict[str, Any]) -> None:
    bodies = [(name, op["requestBody"]) for name, op in _operations(doc) if "requestBody" in op]
    assert len(bodies) > 10
    without, invalid = [], []
    for name, body in bodies:
        for media_type, media in body["content"].items():
            examples = _examples(doc, media)
            if not examples:
                without.append(f"{name} {media_type}")
            validator = _schema_validator(doc, media.get("schema", {}))
            for example in examples:
                for e in validator.iter_errors(example):
                    invalid.append(f"{name}: {'/'.join(map(str, e.absolute_path))} {e.message}")
    assert not without
    assert not invalid


def test_every_success_response_but_204_has_a_body_and_json_ones_a_schema(
    doc: dict[str, Any],
) -> None:
    def json_media(media_type: str) -> bool:
        return media_type == "application/json" or media_type.endswith("+json")

    bare = [
        f"{name} {code}"
        for name, op in _operations(doc)
        for code, response in op["responses"].items()
        if code[0] == "2"
        and code != "204"
        and (
            not response.get("content")
            or any(json_media(t) and not m.get("schema") for t, m in response["content"].items())
        )
    ]
    assert not bare


def test_every_error_response_has_the_error_schema(doc: dict[str, Any]) -> None:
    wrong = [
        f"{name} {code}"
        for name, op in _operations(doc)
        for code, response in op["responses"].items()
        if code[0] in "45"
        and (
            response.get("content") != {"application/json": {"schema": ERROR}}
            or not response.get("description")
        )
    ]
    assert not wrong
    # FastAPI's own validation error shape is gone: 422 bodies are Errors too.
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_every_operation_documents_the_errors_it_can_answer_with(doc: dict[str, Any]) -> None:
    missing = []
    for name, op in _operations(doc):
        codes = set(op["responses"])
        needed = {"429"}
        if op.get("security"):
            needed.add("401")
        if "requestBody" in op:
            needed |= {"400", "413", "422"}
        if op.get("parameters"):
            needed.add("422")
        missing += [f"{name} {code}" for code in sorted(needed - codes)]
    assert not missing
    # Spot checks of what routes declare themselves, and of the role-checked 403.
    paths = doc["paths"]
    consent = paths["/v1/survivors/{survivor_id}/consents/{consent_id}/revoke"]["post"]
    assert {"403", "404", "409", "503"} <= set(consent["responses"])
    assert "advocate, guardian, survivor" in consent["responses"]["403"]["description"]
    assert "403" not in paths["/v1/credentials/rotate"]["post"]["responses"]  # any role


def test_the_error_schema_accepts_both_shapes_the_api_sends(doc: dict[str, Any]) -> None:
    validator = _schema_validator(doc, ERROR)
    for body in (
        {"detail": "Too many attempts; retry later."},
        {"detail": [{"loc": ["body", "data", "age"], "msg": "no", "type": "schema"}]},
    ):
        assert not list(validator.iter_errors(body))
        Error.model_validate(body)
    assert list(validator.iter_errors({"detail": {"message": "x", "errors": ["y"]}}))


Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


class _Body(BaseModel):
    name: str


def test_a_route_added_later_is_documented_the_same_way() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.post("/things/{thing_id}", responses=errors(404))
    def make(thing_id: str, body: _Body, _: Admin) -> dict[str, str]:
        """Make a thing."""
        return {}

    @router.get("/mine")
    def mine(principal: CurrentPrincipal) -> dict[str, str]:
        """Any key."""
        return {}

    app.include_router(router)
    install(app)
    responses = app.openapi()["paths"]["/things/{thing_id}"]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "403", "404", "413", "422", "429"}
    assert all(
        responses[c]["content"]["application/json"]["schema"] == ERROR
        for c in responses
        if c != "200"
    )
    assert "admin" in responses["403"]["description"]
    assert set(app.openapi()["paths"]["/mine"]["get"]["responses"]) == {"200", "401", "429"}
    assert app.openapi() is app.openapi()  # completed once, then cached


def test_a_route_added_after_the_first_document_is_documented_too() -> None:
    app = FastAPI()
    install(app)
    app.openapi()

    @app.get("/late")
    def late(_: Admin) -> dict[str, str]:
        """Added later."""
        return {}

    responses = app.openapi()["paths"]["/late"]["get"]["responses"]
    assert {"401", "403", "429"} <= set(responses)
    assert responses["401"]["content"]["application/json"]["schema"] == ERROR


@pytest.mark.parametrize(
    "value",
    ["0.5", "1700000000", "2026-01-01", "2026-01-01T00:00:00", "2026-13-01 00:00:00Z", "soon"],
)
def test_a_date_time_parameter_is_rfc_3339_only(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(DateTimeParam).validate_python(value)


@pytest.mark.parametrize(
    "value", ["2026-01-01T00:00:00Z", "2026-01-01t12:30:00.25+02:00", "2026-06-30T23:59:59-05:00"]
)
def test_a_date_time_parameter_with_an_offset_is_accepted(value: str) -> None:
    parsed = TypeAdapter(DateTimeParam).validate_python(value)
    assert parsed.tzinfo is not None


def test_every_consent_route_says_consent_is_never_a_condition_of_service(
    doc: dict[str, Any],
) -> None:
    consent_ops = [
        (n, op) for n, op in _operations(doc) if "/survivors/{survivor_id}/consents" in n
    ]
    assert len(consent_ops) >= 8
    silent = [n for n, op in consent_ops if "never a condition of service" not in op["description"]]
    assert not silent
