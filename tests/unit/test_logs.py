"""Logs are one JSON object per line: no ANSI codes, exceptions as a field, no input echoed."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ValidationError

from services import logs
from services.broker.pipeline.decide import PolicyUnavailable


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, sys.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook = hook
    logging.captureWarnings(False)


def formatted(record: logging.LogRecord) -> dict[str, object]:
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    doc = json.loads(line)
    assert isinstance(doc, dict)
    return doc


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_uvicorns_color_message_is_dropped_other_extras_kept() -> None:
    doc = formatted(
        record("Started server process [1]", color_message="Started [\x1b[36m%d\x1b[0m]", pid=1)
    )
    assert "color_message" not in doc
    assert doc["pid"] == 1 and doc["msg"] == "Started server process [1]"


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_an_exception_is_a_field_with_frames_and_a_message_only_where_safe() -> None:
    own = raised(PolicyUnavailable("OPA unavailable: TimeoutError"))
    fields = logs.exception_fields(own)
    assert fields["type"] == "services.broker.pipeline.decide.PolicyUnavailable"
    assert fields["message"] == "OPA unavailable: TimeoutError"
    assert any("test_logs.py" in f and "in raised" in f for f in fields["frames"])
    assert logs.exception_fields(raised(ConnectionRefusedError(111, "refused")))["message"]
    # Another library's message may quote its input: withheld.
    other = logs.exception_fields(raised(ValueError("invalid literal: 'Jane Doe'")))
    assert other["type"] == "builtins.ValueError" and "message" not in other


def test_a_chained_cause_is_named_without_its_message() -> None:
    try:
        try:
            raise KeyError("Jane Doe")
        except KeyError as inner:
            raise PolicyUnavailable("policy failed") from inner
    except PolicyUnavailable as exc:
        fields = logs.exception_fields(exc)
    assert fields["causes"] == [{"type": "builtins.KeyError"}]
    assert "Jane" not in json.dumps(fields)


def test_a_validation_error_names_the_field_never_the_input() -> None:
    class Model(BaseModel):
        limit: int

    try:
        Model.model_validate({"limit": "secret-canary"})
    except ValidationError as exc:
        fields = logs.exception_fields(exc)
    assert fields["message"].startswith("limit: Input should be a valid integer")
    assert "secret-canary" not in json.dumps(fields)


def test_a_crash_is_logged_as_one_json_line(restored: None) -> None:
    logs.configure()
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    exc = raised(RuntimeError("boom with 'Jane Doe'"))
    sys.excepthook(type(exc), exc, exc.__traceback__)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["level"] == "critical" and doc["msg"] == "crashed"
    assert doc["error"] == "RuntimeError"
    assert doc["exception"]["type"] == "builtins.RuntimeError"
    assert "Jane" not in lines[0]


def test_warnings_are_json_lines_too(restored: None) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logs.configure()
        stream = io.StringIO()
        logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
        warnings.warn("Unclosed AIOKafkaProducer", ResourceWarning, stacklevel=1)
    doc = json.loads(stream.getvalue().splitlines()[-1])
    assert doc["logger"] == "py.warnings" and "Unclosed AIOKafkaProducer" in doc["msg"]
