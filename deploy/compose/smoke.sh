#!/usr/bin/env bash
# `make compose-smoke`: start the compose pilot with podman-compose, send one event from a new
# agency over the HTTP API to a new partner, read it back from the partner's topic, stop
# everything and delete the pilot's volume. Exit 0 only if the delivery arrived.
#
# On these machines podman needs runc, lower ulimits and the vfs driver (containers.conf,
# storage.conf here say why); ACCORD_PODMAN_DEFAULTS=1 uses the host's own configuration.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/.venv/bin}
HERE="$ROOT/deploy/compose"
TAG=$("$BIN/python" -c 'import tomllib; print(tomllib.load(open("'"$ROOT"'/pyproject.toml","rb"))["project"]["version"])')
PROJECT=${ACCORD_PILOT_PROJECT:-accord-pilot}
if [[ ${ACCORD_PODMAN_DEFAULTS:-0} != 1 ]]; then
    export CONTAINERS_CONF="$HERE/containers.conf" CONTAINERS_STORAGE_CONF="$HERE/storage.conf"
fi
export ACCORD_IMAGE_TAG=$TAG
say() { printf '[pilot %5ss] %s\n' "$SECONDS" "$*"; }

missing=()
for tool in podman-compose runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || { echo "install with apt-get: ${missing[*]}" >&2; exit 1; }
    say "installing Debian's ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for image in accord accord-infra; do
    podman image exists "localhost/$image:$TAG" || { say "building the images"; BIN=$BIN bash "$ROOT/deploy/image/build.sh" --infra; break; }
done

compose() { podman-compose -p "$PROJECT" -f "$HERE/compose.yaml" "$@"; }
finish() {
    local rc=$?
    if ((rc != 0)); then
        say "FAILED: the containers' last log lines (no secrets are logged)"
        for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
            echo "--- $c"; podman logs --tail 15 "$c" 2>&1 | cut -c1-300
        done
    fi
    say "stopping the pilot and deleting its volume"
    compose down -v >/dev/null 2>&1 || true
    podman volume rm -f "${PROJECT}_state" >/dev/null 2>&1 || true
    exit "$rc"
}
trap finish EXIT

say "starting pilot-init, postgres, kafka, opa"
compose up -d pilot-init postgres kafka opa >/dev/null
say "waiting for pilot-init (certificates, credentials, keys, migrations, ACLs, topics)"
rc=$(podman wait "${PROJECT}_pilot-init_1")
podman logs "${PROJECT}_pilot-init_1" 2>&1 | sed 's/^/    /'
[[ $rc == 0 ]] || { say "pilot-init exited $rc"; exit 1; }
say "starting api, relay-1, relay-2, sink, checkpointer, deadlines, notices"
compose up -d api relay-1 relay-2 sink checkpointer deadlines notices >/dev/null
say "one event, agency -> API -> Kafka -> relay -> OPA -> partner topic"
podman run --rm --network "${PROJECT}_default" -v "${PROJECT}_state:/var/lib/accord" \
    --read-only --tmpfs /tmp "localhost/accord:$TAG" pilot-smoke --api http://api:8080 --timeout 120
# The workers with no part in the delivery: each must answer /readyz 200 on its health port.
ready() {  # container, port
    podman exec "$1" /usr/bin/python3.11 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$2/readyz', timeout=3)" 2>/dev/null
}
for worker in "deadlines 9104" "notices 9105"; do
    set -- $worker
    for _ in $(seq 60); do ready "${PROJECT}_$1_1" "$2" && break; sleep 1; done
    ready "${PROJECT}_$1_1" "$2" || { say "$1 never became ready"; exit 1; }
    say "$1 ready"
done
podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '    {{.Names}}  {{.Status}}'
say "passed"
