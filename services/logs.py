"""Structured JSON logs. Callers pass ids, codes and counts as ``extra``; never field values.

Every line a long-running Accord process writes is one JSON object: its own logs, uvicorn's
and aiokafka's (through the root handler), and a crash (``sys.excepthook``), whose traceback
becomes the ``exception`` field rather than boxed text.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
# uvicorn adds ``color_message``, the message again with ANSI colour codes, for its own
# coloured formatter: never in JSON.
_DROPPED = {"color_message"}
MAX_FRAMES = 30


def _message(exc: BaseException) -> str | None:
    """An exception's message, only where it cannot carry case data or a secret: Accord's own
    exceptions (written never to echo input), OS, timeout and Kafka errors, and pydantic's
    validation errors without their input values. Other libraries' messages may quote what
    they were given (a database error its SQL parameters), so they are withheld."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
    module = type(exc).__module__
    if module.startswith(("services.", "aiokafka.")) or isinstance(exc, OSError | TimeoutError):
        return str(exc)
    return None


def exception_fields(exc: BaseException) -> dict[str, Any]:
    """The ``exception`` field: type, message (where safe, see ``_message``), where it was
    raised (file:line in function, innermost last) and the chain of causes."""
    frames = [
        f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)
    ]
    doc: dict[str, Any] = {"type": f"{type(exc).__module__}.{type(exc).__qualname__}"}
    message = _message(exc)
    if message is not None:
        doc["message"] = message
    doc["frames"] = frames[-MAX_FRAMES:]
    causes: list[dict[str, str]] = []
    seen = {id(exc)}
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen and len(causes) < 10:
        seen.add(id(cause))
        entry = {"type": f"{type(cause).__module__}.{type(cause).__qualname__}"}
        text = _message(cause)
        if text is not None:
            entry["message"] = text
        causes.append(entry)
        cause = cause.__cause__ or cause.__context__
    if causes:
        doc["causes"] = causes
    return doc


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(
            {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k not in _DROPPED}
        )
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = type(record.exc_info[1]).__name__
            entry["exception"] = exception_fields(record.exc_info[1])
        return json.dumps(entry, default=str)


def _crash(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """``sys.excepthook``: an uncaught exception is logged as one JSON line, not a traceback."""
    if issubclass(exc_type, KeyboardInterrupt):
        logging.getLogger("accord").info("interrupted")
        return
    logging.getLogger("accord").critical("crashed", exc_info=(exc_type, exc, tb))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per readiness probe to OPA
    logging.captureWarnings(True)  # warnings (an unclosed client...) as JSON lines too
    # Typer's pretty tracebacks are off (services/cli.py), so the interpreter calls this hook.
    sys.excepthook = _crash
