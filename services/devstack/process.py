"""Background processes owned by the dev stack: start detached, record the pid, stop by pid.

``down`` must stop only what ``up`` started, so every service we start gets a pid file and
nothing is ever stopped by name or by port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class Steps:
    """One line per step of a long start-up, each with the seconds since it began.

    ``accord dev up`` takes minutes on a fresh machine (apt-get, ``go install``, Maven); these
    lines say what it is doing meanwhile. Without ``echo`` nothing is printed."""

    def __init__(self, echo: Callable[[str], None] | None = None, *, prefix: str = "") -> None:
        self._echo = echo
        self._prefix = prefix
        self._started = time.monotonic()

    def __call__(self, what: str, *, slow: bool = False) -> None:
        if self._echo is not None:
            note = " (only the first time; may take minutes)" if slow else ""
            elapsed = time.monotonic() - self._started
            self._echo(f"{self._prefix}[{elapsed:6.1f} s] {what}{note}")


QUIET = Steps()


class StackError(RuntimeError):
    """A service could not be installed, started or reached; the message says what to do."""


@dataclass(frozen=True)
class Managed:
    name: str
    pid_file: Path
    log_file: Path
    stop_signal: signal.Signals = signal.SIGTERM

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state != "Z"


def spawn(
    proc: Managed,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    proc.log_file.parent.mkdir(parents=True, exist_ok=True)
    proc.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with proc.log_file.open("ab") as log:
        child = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,  # survives the CLI and is not hit by its Ctrl-C
        )
    proc.pid_file.write_text(f"{child.pid}\n")
    return child.pid


def stop(proc: Managed, *, timeout_s: float = 20.0) -> bool:
    pid = proc.pid()
    if pid is None:
        proc.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, proc.stop_signal)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    proc.pid_file.unlink(missing_ok=True)
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    check: Callable[[], bool], *, what: str, timeout_s: float, log_file: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    hint = f"; see {log_file}" if log_file else ""
    raise StackError(f"{what} did not become healthy within {timeout_s:.0f}s{hint}")


def run(argv: Sequence[str], *, what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise StackError(f"{what} failed (exit {result.returncode}):\n" + "\n".join(tail))
    return result.stdout
