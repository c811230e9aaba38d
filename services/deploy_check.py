"""What the Helm chart's rendered manifests must hold beyond their Kubernetes schemas.

``python -m services.deploy_check rendered.yaml`` (run by ``deploy/helm/check.sh``) checks the
ServiceMonitor (the one kind kubernetes-validate has no schema for) against the fields the
Prometheus Operator needs, and the chart's promises (docs/deployment.md): every container
non-root with a read-only root filesystem, no privilege escalation and no capabilities; every
Accord container probed on /readyz and /healthz; one active writer (replicas 1, Recreate) for
the checkpointer and the deadline worker; a PodDisruptionBudget for the relay; a default-deny
NetworkPolicy; OPA on loopback only. Prints a one-line summary; exits 1 listing what fails.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port", "path"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}

ONE_WRITER = ("checkpointer", "deadlines")


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def _component(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", ""))


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if obj.get("kind") in ("Deployment", "Job"):
        spec: Mapping[str, Any] = obj["spec"]["template"]["spec"]
        return spec
    return None


def _container_problems(name: str, pod: Mapping[str, Any]) -> Iterable[str]:
    ctx = pod.get("securityContext", {})
    if not (ctx.get("runAsNonRoot") and ctx.get("runAsUser", 0) > 0):
        yield f"{name}: pod may run as root"
    for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        sc = c.get("securityContext", {})
        where = f"{name}/{c['name']}"
        if sc.get("readOnlyRootFilesystem") is not True:
            yield f"{where}: root filesystem is writable"
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{where}: privilege escalation allowed"
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            yield f"{where}: capabilities not dropped"
        if c["name"] == "opa":
            addrs = [a for a in c.get("command", []) if a.startswith("--addr=")]
            env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
            addr = addrs[0].removeprefix("--addr=") if addrs else env.get("ACCORD_OPA_ADDR", "")
            if not addr.startswith("127.0.0.1:"):
                yield f"{where}: OPA must listen on loopback only"


def problems(docs: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for obj in docs:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name", "?")
        if kind == "ServiceMonitor":
            validator = jsonschema.Draft202012Validator(SERVICE_MONITOR)
            found += [f"ServiceMonitor {name}: {e.message}" for e in validator.iter_errors(obj)]
        pod = _pod_spec(obj)
        if pod is None:
            continue
        found += _container_problems(f"{kind} {name}", pod)
        if kind != "Deployment":
            continue
        main = pod["containers"][0]
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            if main.get(probe, {}).get("httpGet", {}).get("path") != path:
                found.append(f"Deployment {name}: no {probe} on {path}")
        if _component(obj) in ONE_WRITER and (
            obj["spec"].get("replicas") != 1
            or obj["spec"].get("strategy", {}).get("type") != "Recreate"
        ):
            found.append(f"Deployment {name}: one active writer needs replicas 1 and Recreate")
    kinds = Counter(str(o.get("kind")) for o in docs)
    relay_pdb = any(
        o.get("kind") == "PodDisruptionBudget" and _component(o) == "relay" for o in docs
    )
    if not relay_pdb:
        found.append("no PodDisruptionBudget for the relay")
    policies = [o for o in docs if o.get("kind") == "NetworkPolicy"]
    if policies and not any(
        set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        found.append("NetworkPolicies without a default deny")
    if not kinds.get("Deployment"):
        found.append("no Deployment rendered")
    return found


def summary(docs: list[dict[str, Any]]) -> str:
    kinds = Counter(str(o.get("kind")) for o in docs)
    return f"{len(docs)} objects: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))


def main(argv: list[str]) -> int:
    docs = [d for p in argv for d in load(Path(p))]
    found = problems(docs)
    for line in found:
        print(line, file=sys.stderr)
    print(summary(docs))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
