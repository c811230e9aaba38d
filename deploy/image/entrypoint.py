"""The image's entrypoint: the first argument picks the role, secrets come from files.

    accord-image ROLE [ARGS...]

Roles: api, relay, sink, checkpointer, deadlines, notices, migrate, opa, pilot-init,
pilot-smoke; anything else is passed to the ``accord`` command as it is
(``accord-image keys status``).

Secrets never need to be in the environment: every regular file named ``ACCORD_<NAME>`` in
``$ACCORD_SECRETS_DIR`` (default ``/run/secrets/accord``, where a Kubernetes Secret or a
compose secret is mounted) becomes the environment variable ``ACCORD_<NAME>`` with the file's
content (surrounding whitespace stripped), unless that variable is already set. Nothing is
printed about them. Then the role's program replaces this process (exec), so signals reach it
directly and the container stops cleanly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

APP = Path(os.environ.get("ACCORD_APP_DIR", "/opt/accord/app"))
ACCORD = ["/usr/local/bin/accord"]  # the image's wrapper of services.cli:app
ROLES: dict[str, list[str]] = {
    "api": ["api"],
    "relay": ["relay"],
    "sink": ["sink"],
    "checkpointer": ["audit", "checkpointer"],
    "deadlines": ["deadlines"],
    "notices": ["notices"],
    "migrate": ["db", "upgrade"],
    "pilot-init": ["pilot", "init"],
    "pilot-smoke": ["pilot", "smoke"],
}


def load_secret_files(env: dict[str, str]) -> list[str]:
    """Fill ``env`` from ``$ACCORD_SECRETS_DIR/ACCORD_*``; returns the names set (not values)."""
    directory = Path(env.get("ACCORD_SECRETS_DIR", "/run/secrets/accord"))
    if not directory.is_dir():
        return []
    loaded = []
    for path in sorted(directory.iterdir()):
        # Kubernetes mounts each key as a symlink into a ..data directory: follow it.
        if path.name.startswith("ACCORD_") and path.is_file() and path.name not in env:
            env[path.name] = path.read_text().strip()
            loaded.append(path.name)
    return loaded


def opa_argv(env: dict[str, str]) -> list[str]:
    """``opa run`` on the policies baked into the image, with the revision every decision
    records (R13) written where the relay's own dev stack writes it (accord.meta)."""
    sys.path.insert(0, str(APP))
    from services.devstack.opa import policy_revision

    policies = Path(env.get("ACCORD_POLICIES_DIR", str(APP / "policies")))
    meta = Path(env.get("ACCORD_STATE_DIR", "/var/lib/accord")) / "opa" / "meta.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"revision": policy_revision(policies)}))
    addr = env.get("ACCORD_OPA_ADDR", "127.0.0.1:8181")
    return [
        "/usr/local/bin/opa",
        "run",
        "--server",
        "--addr",
        addr,
        "--log-format",
        "json",
        "--log-level",
        env.get("ACCORD_OPA_LOG_LEVEL", "error"),
        "--ignore",
        "schemas",
        str(policies),
        f"accord.meta:{meta}",
    ]


def main(argv: list[str]) -> None:
    env = dict(os.environ)
    load_secret_files(env)
    if not argv:
        argv = ["--help"]
    role, rest = argv[0], argv[1:]
    if role == "opa":
        command = opa_argv(env) + rest
    elif role in ROLES:
        command = ACCORD + ROLES[role] + rest
    else:
        command = ACCORD + argv
    os.chdir(APP)
    os.execve(command[0], command, env)  # noqa: S606  (no shell on purpose: argv as given)


if __name__ == "__main__":
    main(sys.argv[1:])
