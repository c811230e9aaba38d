"""The deployment's pure parts: the image entrypoint's roles and secret files, the chart's
manifest checks (services/deploy_check.py), the pilot's broker configuration."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from services import deploy_check
from services.devstack import kafka as dev_kafka
from services.settings import REPO_ROOT, Settings


def _entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "accord_entrypoint", REPO_ROOT / "deploy" / "image" / "entrypoint.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_secret_files_become_variables_without_overriding_the_environment(
    tmp_path: Path,
) -> None:
    ep = _entrypoint()
    (tmp_path / "ACCORD_DATABASE_URL").write_text("postgresql://x\n")
    (tmp_path / "ACCORD_KEKS").write_text("k1:abc")
    (tmp_path / "kafka-credentials.json").write_text("{}")  # read by path, not a variable
    env = {"ACCORD_SECRETS_DIR": str(tmp_path), "ACCORD_KEKS": "from-env"}
    assert ep.load_secret_files(env) == ["ACCORD_DATABASE_URL"]
    assert env["ACCORD_DATABASE_URL"] == "postgresql://x"
    assert env["ACCORD_KEKS"] == "from-env"
    assert "kafka-credentials.json" not in env


def test_every_role_runs_an_existing_accord_command() -> None:
    from typer.main import get_command

    from services.cli import app

    ep = _entrypoint()
    root = get_command(app)
    ctx = root.make_context("accord", ["--help"], resilient_parsing=True)
    for role, argv in ep.ROLES.items():
        command: Any = root
        for word in argv:
            command = command.get_command(ctx, word)
            assert command is not None, f"role {role}: no `accord {' '.join(argv)}`"


def test_opa_role_serves_the_policies_on_loopback_with_their_revision(tmp_path: Path) -> None:
    ep = _entrypoint()
    env = {"ACCORD_STATE_DIR": str(tmp_path), "ACCORD_POLICIES_DIR": str(REPO_ROOT / "policies")}
    argv = ep.opa_argv(env)
    assert argv[argv.index("--addr") + 1] == "127.0.0.1:8181"
    meta = tmp_path / "opa" / "meta.json"
    assert f"accord.meta:{meta}" in argv
    assert '"revision": "sha256:' in meta.read_text()


def _deployment(component: str, replicas: int = 1, strategy: str = "RollingUpdate") -> Any:
    container = {
        "name": component,
        "readinessProbe": {"httpGet": {"path": "/readyz"}},
        "livenessProbe": {"httpGet": {"path": "/healthz"}},
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "kind": "Deployment",
        "metadata": {"name": component, "labels": {"app.kubernetes.io/component": component}},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": strategy},
            "template": {
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [container],
                }
            },
        },
    }


PDB = {
    "kind": "PodDisruptionBudget",
    "metadata": {"name": "relay", "labels": {"app.kubernetes.io/component": "relay"}},
}
DENY = {
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}


def _good() -> list[Any]:
    return [
        _deployment("relay", 3),
        _deployment("checkpointer", 1, "Recreate"),
        PDB,
        DENY,
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "m"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
            },
        },
    ]


def test_a_chart_that_keeps_its_promises_passes() -> None:
    assert deploy_check.problems(_good()) == []


@pytest.mark.parametrize(
    ("breaks", "expected"),
    [
        (lambda d: d[1]["spec"].update(replicas=2), "one active writer"),
        (lambda d: d[1]["spec"].update(strategy={"type": "RollingUpdate"}), "one active writer"),
        (lambda d: d.remove(PDB), "PodDisruptionBudget for the relay"),
        (lambda d: d[3]["spec"].update(egress=[{}]), "default deny"),
        (
            lambda d: d[0]["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(
                readOnlyRootFilesystem=False
            ),
            "root filesystem is writable",
        ),
        (
            lambda d: d[0]["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
            "may run as root",
        ),
        (
            lambda d: d[0]["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe"),
            "no readinessProbe on /readyz",
        ),
        (
            lambda d: d[0]["spec"]["template"]["spec"]["containers"].append(
                {
                    **d[0]["spec"]["template"]["spec"]["containers"][0],
                    "name": "opa",
                    "command": ["opa", "run", "--addr=0.0.0.0:8181"],
                }
            ),
            "OPA must listen on loopback",
        ),
        (lambda d: d[4]["spec"]["endpoints"][0].pop("port"), "'port' is a required property"),
    ],
)
def test_each_broken_promise_is_named(breaks: Any, expected: str) -> None:
    docs = copy.deepcopy(_good())
    breaks(docs)
    assert any(expected in p for p in deploy_check.problems(docs)), deploy_check.problems(docs)


def test_pilot_broker_listens_on_all_addresses_and_is_reached_by_its_name(
    tmp_path: Path,
) -> None:
    s = Settings(state_dir=tmp_path, kafka_port=9093, kafka_controller_port=9094)
    pilot = dev_kafka.render_config(s, host="kafka", listen_host="0.0.0.0")  # noqa: S104
    text = Path(pilot).read_text()
    assert "listeners=SASL_SSL://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094\n" in text
    assert "advertised.listeners=SASL_SSL://kafka:9093\n" in text
    assert "controller.quorum.voters=1@kafka:9094\n" in text
    dev = Path(dev_kafka.render_config(s)).read_text()
    assert "advertised.listeners=SASL_SSL://127.0.0.1:9093\n" in dev


def test_pilot_init_prepares_every_file_private_and_names_the_broker(tmp_path: Path) -> None:
    from cryptography import x509

    from services import pilot

    s = Settings(state_dir=tmp_path)
    hosts = pilot.PilotHosts()
    pilot.prepare(s, hosts)
    for private in (
        "kafka/server.properties",
        "kafka/scram",
        "kafka/credentials.json",
        "kafka/tls/broker.pem",
        "postgres/password",
        "stack.env",
        "keys/relay.key",
        "keys/kek.key",
    ):
        assert (tmp_path / private).stat().st_mode & 0o077 == 0, private
    cert = x509.load_pem_x509_certificate((tmp_path / "kafka" / "tls" / "broker.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kafka" in names.get_values_for_type(x509.DNSName)
    env = (tmp_path / "stack.env").read_text()
    assert "ACCORD_KAFKA_BOOTSTRAP=kafka:9093\n" in env
    assert "ACCORD_OPA_URL=http://opa:8181\n" in env
    assert "@postgres:5432/accord\n" in env
    assert not (tmp_path / "kafka" / "cluster.id").read_text().startswith("-")
    before = (tmp_path / "postgres" / "password").read_text()
    pilot.prepare(s, hosts)  # idempotent: the same password, keys and CA
    assert (tmp_path / "postgres" / "password").read_text() == before


def test_every_runtime_dependency_is_pinned_for_the_image() -> None:
    """The image installs deploy/image/requirements.txt with --no-deps: a dependency added to
    pyproject.toml and not re-pinned (`make image-lock`) is a container that cannot start."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    lines = (REPO_ROOT / "deploy" / "image" / "requirements.txt").read_text().splitlines()
    pinned = {canonicalize_name(x.split("==")[0]) for x in lines if "==" in x}
    assert sorted(wanted - pinned) == []
