#!/usr/bin/env bash
# `make helm-check` (part of `make test`): lint the chart and render it for each value set in
# deploy/helm/accord/ci/ (minimal, production, pilot); every rendered manifest must pass
# yamllint and kubernetes-validate --strict (the Kubernetes schemas ship with it). The one
# kind those schemas lack, the Prometheus Operator's ServiceMonitor, is checked against the
# fields Prometheus needs (services/deploy_check.py). Helm comes from the Go proxy with
# `go install`, cached in ~/.cache/accord like OPA. Seconds once Helm is built.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/.venv/bin}
HELM_VERSION=${ACCORD_HELM_VERSION:-v3.22.0}
KUBE_VERSION=${ACCORD_KUBE_VERSION:-1.34.0}
CACHE=${ACCORD_CACHE_DIR:-$HOME/.cache/accord}
HELM="$CACHE/helm-$HELM_VERSION/helm"
CHART="$ROOT/deploy/helm/accord"
OUT="$ROOT/.accord/helm"

if [[ ! -x $HELM ]]; then
    echo "helm-check: building Helm $HELM_VERSION with go install into ${HELM%/helm} (only the first time; minutes)"
    mkdir -p "${HELM%/helm}"
    GOBIN="${HELM%/helm}" CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
mkdir -p "$OUT"
"$BIN/yamllint" --strict -c "$ROOT/deploy/helm/yamllint.yaml" "$CHART/Chart.yaml" "$CHART/values.yaml" "$CHART/ci"
for values in "$CHART"/ci/*-values.yaml; do
    name=$(basename "$values" -values.yaml)
    rendered="$OUT/$name.yaml"
    "$HELM" lint --strict --quiet --kube-version "$KUBE_VERSION" "$CHART" -f "$values" >/dev/null
    "$HELM" template accord "$CHART" --kube-version "$KUBE_VERSION" -f "$values" >"$rendered"
    "$BIN/yamllint" --strict -c "$ROOT/deploy/helm/yamllint.yaml" "$rendered"
    report=$("$BIN/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$rendered" 2>&1) || {
        echo "$report"; echo "helm-check: $name: kubernetes-validate failed" >&2; exit 1; }
    unknown=$(grep "Couldn't find schema" <<<"$report" | grep -v "kind ServiceMonitor " || true)
    [[ -z $unknown ]] || { echo "$unknown"; echo "helm-check: $name: a kind without schema" >&2; exit 1; }
    summary=$("$BIN/python" -m services.deploy_check "$rendered")
    echo "helm-check: $name: lint, yamllint, kubernetes-validate $KUBE_VERSION --strict: ok ($summary)"
done
