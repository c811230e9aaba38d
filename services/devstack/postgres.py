"""PostgreSQL from Debian's packages, a private cluster under the state dir on 127.0.0.1."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
from pathlib import Path

import psycopg

from services.devstack.process import QUIET, Managed, StackError, Steps, port_open, run, wait_until
from services.settings import Settings

USER = "accord"
DATABASES = ("accord", "accord_test")


def data_dir(s: Settings) -> Path:
    return s.state_dir / "postgres" / "data"


def managed(s: Settings) -> Managed:
    # postgres writes its own pid file; SIGINT is its "fast" shutdown.
    return Managed(
        "postgres",
        data_dir(s) / "postmaster.pid",
        s.state_dir / "logs" / "postgres.log",
        stop_signal=signal.SIGINT,
    )


def bin_dir(steps: Steps = QUIET) -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.geteuid() != 0:
            raise StackError(
                "PostgreSQL is not installed: run `apt-get install postgresql` as root"
            )
        steps("postgres: installing Debian's postgresql with apt-get", slow=True)
        run(["apt-get", "update", "-qq"], what="apt-get update")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(
            ["apt-get", "install", "-y", "-qq", "postgresql"], what="installing PostgreSQL", env=env
        )
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent


def _as_owner(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; use Debian's postgres account then.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _password(s: Settings) -> str:
    path = s.state_dir / "postgres" / "password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def url(s: Settings, database: str = "accord") -> str:
    return f"postgresql+psycopg://{USER}:{_password(s)}@127.0.0.1:{s.postgres_port}/{database}"


def _ensure_cluster(s: Settings, bindir: Path, steps: Steps) -> None:
    data = data_dir(s)
    if (data / "PG_VERSION").exists():
        return
    steps(f"postgres: creating a cluster in {data} (initdb)")
    data.mkdir(parents=True, exist_ok=True)
    pwfile = data.parent / "pwfile"
    pwfile.write_text(_password(s) + "\n")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        run(
            _as_owner(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    USER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            what="initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _connect(s: Settings, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host="127.0.0.1",
        port=s.postgres_port,
        user=USER,
        password=_password(s),
        dbname=database,
        connect_timeout=2,
        autocommit=True,
    )


def healthy(s: Settings) -> bool:
    try:
        with _connect(s) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _ensure_databases(s: Settings) -> None:
    ensure_database(s, *DATABASES)


def ensure_database(s: Settings, *names: str) -> None:
    """Create the named databases if missing (tests may ask for one of their own)."""
    with _connect(s) as conn:
        for name in names:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                continue
            conn.execute(f'CREATE DATABASE "{name}"')


def up(s: Settings, steps: Steps = QUIET) -> str:
    proc = managed(s)
    if proc.pid() is not None and healthy(s):
        _ensure_databases(s)
        return f"postgres already running (pid {proc.pid()})"
    if proc.pid() is None and port_open(s.postgres_port):
        raise StackError(
            f"port {s.postgres_port} is taken by a process this stack did not start; "
            "set ACCORD_POSTGRES_PORT to another port"
        )
    bindir = bin_dir(steps)
    _ensure_cluster(s, bindir, steps)
    steps(f"postgres: starting on 127.0.0.1:{s.postgres_port}")
    proc.log_file.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        proc.log_file.touch()
        shutil.chown(proc.log_file, "postgres", "postgres")
    options = (
        f"-p {s.postgres_port} -c listen_addresses=127.0.0.1 "
        f"-c unix_socket_directories={data_dir(s)}"
    )
    run(
        _as_owner(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data_dir(s)),
                "-l",
                str(proc.log_file),
                "-o",
                options,
                "-w",
                "start",
            ]
        ),
        what="starting postgres",
    )
    wait_until(lambda: healthy(s), what="postgres", timeout_s=30, log_file=proc.log_file)
    _ensure_databases(s)
    return f"postgres on 127.0.0.1:{s.postgres_port} (pid {proc.pid()})"
