#!/usr/bin/env bash
# Regenerate deploy/image/requirements.txt (`make image-lock`): the runtime dependencies of
# pyproject.toml (no dev extras), resolved to wheels at the versions the development venv has,
# every transitive dependency pinned. The image installs exactly these, with --no-deps.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/.venv/bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$BIN/pip" freeze --exclude-editable >"$work/constraints.txt"
"$BIN/pip" install --quiet --disable-pip-version-check --dry-run --ignore-installed \
    --only-binary=:all: --report "$work/report.json" -c "$work/constraints.txt" "$ROOT"
"$BIN/python" - "$work/report.json" >"$ROOT/deploy/image/requirements.txt" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
pins = sorted(
    (i["metadata"]["name"].lower(), i["metadata"]["version"])
    for i in report["install"]
    if i["metadata"]["name"].lower() != "accord"
)
print("# The image's Python dependencies, every one pinned: deploy/image/lock.sh wrote this.")
for name, version in pins:
    print(f"{name}=={version}")
PY
echo "deploy/image/requirements.txt: $(grep -c '==' "$ROOT/deploy/image/requirements.txt") pins"
