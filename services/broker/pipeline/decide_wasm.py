"""Stage 3 (decide), in process: the same Rego, compiled to WebAssembly by the same OPA.

``opa build -t wasm -e accord/decision/batch`` compiles the policy tree the OPA server loads;
``WasmPolicy`` evaluates it with wasmtime through OPA's documented Wasm ABI (``opa_eval``,
ABI 1.2+) and answers exactly what the server's ``data.accord.decision.batch`` answers for the
same input and data (proven by tests/integration/test_wasm_differential.py). The OPA server
stays the reference: this is an optional engine (``ACCORD_POLICY_ENGINE=wasm``), and any chunk
the module cannot evaluate (a host built-in failing, a trap) is asked of the server instead,
so the engine never decides differently, it only decides faster or falls back.

wasmtime runs the module without the GIL held (ctypes releases it for foreign calls), so
evaluation runs in worker threads, one module instance per thread, beside the relay's loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import wasmtime

from services.broker.pipeline.decide import Policy
from services.broker.pipeline.model import JSON

ENTRYPOINT = "accord/decision/batch"
BUILD = ("build", "-t", "wasm", "-e")

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


class WasmError(RuntimeError):
    """The module could not evaluate this input (the server answers instead)."""


class BuiltinUndefined(ValueError):
    """A host built-in's error that OPA (non-strict) turns into an undefined call."""


def parse_rfc3339_ns(value: Any) -> int:
    """OPA's ``time.parse_rfc3339_ns``: nanoseconds since the epoch, exact to the nanosecond."""
    m = _RFC3339.match(value) if isinstance(value, str) else None
    if m is None:
        raise BuiltinUndefined("time.parse_rfc3339_ns: not an RFC 3339 time")
    date, clock, fraction, zone = m.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    whole = datetime.fromisoformat(f"{date}T{clock}{zone}")
    seconds = (whole - datetime(1970, 1, 1, tzinfo=UTC)) // _SECOND
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


_SECOND = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)

# The host built-ins the compiled policy may call (OPA implements the rest inside the module).
BUILTINS: dict[str, Callable[..., Any]] = {"time.parse_rfc3339_ns": parse_rfc3339_ns}


def build_module(opa: Path, policies: Path, out_dir: Path) -> tuple[bytes, JSON]:
    """Compile the policy tree as the server loads it; returns the module and the bundle's data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = out_dir / "policy-wasm.tar.gz"
    done = subprocess.run(
        [str(opa), *BUILD, ENTRYPOINT, "--ignore", "schemas", str(policies), "-o", str(bundle)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise WasmError(f"opa build -t wasm failed: {done.stderr.strip()[:500]}")
    with tarfile.open(bundle) as tar:
        wasm = _member(tar, "/policy.wasm")
        data = json.loads(_member(tar, "/data.json"))
    return wasm, data


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    for info in tar.getmembers():
        if "/" + info.name.lstrip("/") == name:
            f = tar.extractfile(info)
            if f is not None:
                return f.read()
    raise WasmError(f"the wasm bundle has no {name}")


class _Instance:
    """One instantiated module with the data document loaded; not thread-safe."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module, data: JSON) -> None:
        self._store = wasmtime.Store(engine)
        memory_import = next(i for i in module.imports if i.name == "memory")
        assert isinstance(memory_import.type, wasmtime.MemoryType)
        self._memory = wasmtime.Memory(self._store, memory_import.type)
        self._builtin_names: dict[int, str] = {}
        linker = wasmtime.Linker(engine)
        linker.define(self._store, "env", "memory", self._memory)
        i32 = wasmtime.ValType.i32()
        linker.define_func("env", "opa_abort", wasmtime.FuncType([i32], []), self._abort)
        linker.define_func("env", "opa_println", wasmtime.FuncType([i32], []), lambda _: None)
        for arity in range(5):
            linker.define_func(
                "env",
                f"opa_builtin{arity}",
                wasmtime.FuncType([i32] * (2 + arity), [i32]),
                self._builtin,
            )
        self._exports = linker.instantiate(self._store, module).exports(self._store)
        self._builtin_names = {
            int(i): name for name, i in self._dump(self._call("builtins")).items()
        }
        entrypoints = self._dump(self._call("entrypoints"))
        self._entrypoint = int(entrypoints[ENTRYPOINT])
        self._data = self._load(data)
        self._strings_readable = self._check_string_layout()
        self._heap = int(self._call("opa_heap_ptr_get"))
        # Per evaluation: a built-in's answer by its argument, loaded once. The policy calls
        # time.parse_rfc3339_ns ~9 times per decision on a handful of distinct timestamps
        # (OPA's Wasm has no memoisation), and each call through wasmtime-py costs ~90 us.
        self._answers: dict[tuple[int, str], int] = {}

    def _call(self, name: str, *args: int) -> Any:
        func = self._exports[name]
        assert isinstance(func, wasmtime.Func)
        return func(self._store, *args)

    def _abort(self, addr: int) -> None:
        raise WasmError(f"opa_abort: {self._string(addr)[:200]}")

    def _builtin(self, builtin_id: int, _ctx: int, *args: int) -> int:
        name = self._builtin_names.get(builtin_id, "")
        if name not in BUILTINS:  # declared by the module, never called by our rules so far
            raise WasmError(f"host built-in {name!r} is not provided")
        values = [self._arg(a) for a in args]
        key = (builtin_id, json.dumps(values))
        answer = self._answers.get(key)
        if answer is None:
            try:
                result = BUILTINS[name](*values)
            except BuiltinUndefined:
                return 0  # NULL: the call is undefined, as a failing built-in is in OPA
            except Exception as exc:  # anything else: let the server decide this input
                raise WasmError(f"{name}: {type(exc).__name__}") from exc
            answer = self._answers[key] = self._load(result)
        return answer

    # OPA's value structs on wasm32 (wasm/src/value.h): every value starts with a one-byte
    # type; a string (type 4) holds its length at +4 and a pointer to its bytes at +8.
    _STRING = 4

    def _arg(self, addr: int) -> Any:
        """A built-in's argument: strings read straight from the value struct (its layout
        checked against opa_json_dump at start), anything else through opa_json_dump."""
        if self._strings_readable:
            text = self._string_struct(addr)
            if text is not None:
                return text
        return self._dump(addr)

    def _string_struct(self, addr: int) -> str | None:
        head = self._memory.read(self._store, addr, addr + 12)
        if head[0] != self._STRING:
            return None
        length = int.from_bytes(head[4:8], "little")
        ptr = int.from_bytes(head[8:12], "little")
        return self._memory.read(self._store, ptr, ptr + length).decode()

    def _check_string_layout(self) -> bool:
        sample = "2026-11-24T12:00:00.123456789+01:00 \u00e9"
        addr = self._load(sample)
        try:
            return bool(self._string_struct(addr) == sample == self._dump(addr))
        except (UnicodeDecodeError, IndexError, ValueError):
            return False

    def _string(self, addr: int) -> str:
        """The NUL-terminated string at ``addr``, read in chunks."""
        out = bytearray()
        size = self._size()
        while addr < size:
            chunk = self._memory.read(self._store, addr, min(addr + 65536, size))
            end = chunk.find(0)
            if end >= 0:
                out += chunk[:end]
                return out.decode()
            out += chunk
            addr += len(chunk)
        raise WasmError("unterminated string in module memory")

    def _size(self) -> int:
        return int(self._memory.data_len(self._store))

    def _dump(self, value_addr: int) -> Any:
        return json.loads(self._string(int(self._call("opa_json_dump", value_addr))))

    def _load(self, value: Any) -> int:
        raw = json.dumps(value, separators=(",", ":")).encode()
        addr = int(self._call("opa_malloc", len(raw)))
        self._memory.write(self._store, raw, addr)
        parsed = int(self._call("opa_json_parse", addr, len(raw)))
        self._call("opa_free", addr)
        if parsed == 0:
            raise WasmError("opa_json_parse failed")
        return parsed

    def evaluate(self, input_json: bytes) -> Any:
        # The input goes right after the data; opa_eval's heap starts after the input, so each
        # evaluation reuses the same memory instead of growing it.
        end = self._heap + len(input_json)
        if end > self._size():
            self._memory.grow(self._store, (end - self._size()) // 65536 + 1)
        self._memory.write(self._store, input_json, self._heap)
        self._answers.clear()  # the heap is reset: values loaded before are gone
        result = int(
            self._call(
                "opa_eval", 0, self._entrypoint, self._data, self._heap, len(input_json), end, 0
            )
        )
        return json.loads(self._string(result))


class WasmPolicy(Policy):
    """A ``Policy`` evaluating the compiled module in ``workers`` threads; ``fallback`` (the
    OPA server) answers whatever the module cannot."""

    def __init__(self, wasm: bytes, data: JSON, *, fallback: Policy, workers: int = 2) -> None:
        engine = wasmtime.Engine()
        module = wasmtime.Module(engine, wasm)
        self._fallback = fallback
        self._pool: asyncio.Queue[_Instance] = asyncio.Queue()
        for _ in range(workers):
            self._pool.put_nowait(_Instance(engine, module, data))
        self.fallbacks = 0  # items the server answered instead (for tests and the benchmark)

    async def decide(self, items: Sequence[JSON]) -> list[Any]:
        instance = await self._pool.get()
        try:
            answers = await asyncio.to_thread(_evaluate_each, instance, items)
        finally:
            self._pool.put_nowait(instance)
        missing = [i for i, a in enumerate(answers) if a is _UNANSWERED]
        if missing:
            self.fallbacks += len(missing)
            server = await self._fallback.decide([items[i] for i in missing])
            for i, answer in zip(missing, server, strict=True):
                answers[i] = answer
        return answers


_UNANSWERED = object()


def _evaluate_each(instance: _Instance, items: Sequence[JSON]) -> list[Any]:
    """The chunk in one evaluation; if the module cannot evaluate it, item by item, leaving
    ``_UNANSWERED`` where it cannot (a host built-in failing on a malformed timestamp, say)."""
    try:
        return _results(instance.evaluate(_encode(items)), len(items))
    except (WasmError, wasmtime.WasmtimeError, wasmtime.Trap):
        pass
    answers: list[Any] = []
    for item in items:
        try:
            answers.extend(_results(instance.evaluate(_encode([item])), 1))
        except (WasmError, wasmtime.WasmtimeError, wasmtime.Trap):
            answers.append(_UNANSWERED)
    return answers


def _encode(items: Sequence[JSON]) -> bytes:
    return json.dumps({"items": list(items)}, separators=(",", ":")).encode()


def _results(answer: Any, n: int) -> list[Any]:
    result = answer[0].get("result") if isinstance(answer, list) and answer else None
    if not isinstance(result, list) or len(result) != n:
        return [None] * n  # as with the server: a broken answer denies each item
    return result
