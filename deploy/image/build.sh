#!/usr/bin/env bash
# Build Accord's OCI images from Debian's packages, reproducibly (`make image`).
#
#   localhost/accord:<version>        API, relay, sink, checkpointer, deadlines, notices, migrate, opa
#   localhost/accord-infra:<version>  Kafka (jars from Maven Central) and PostgreSQL, for the
#                                     compose pilot only (production uses its own; built with
#                                     --infra)
#
# No container registry: the base is `mmdebstrap` of Debian bookworm (variant essential: no
# apt, no compiler, no pip), cached by its package list; the Python dependencies are the wheels
# pinned in deploy/image/requirements.txt, installed into the rootfs by the build's own pip;
# OPA and Kafka's jars come from the dev stack's caches (go install, Maven). Every file gets
# the mtime SOURCE_DATE_EPOCH (default: the last commit's time) and the layer tarball is
# written sorted with numeric owners, so the same inputs give the same layer digest. Debian's
# archive moves on (snapshot.debian.org is not reachable here): the build writes the exact
# package versions beside the image (.accord/image/*.packages) to compare two builds.
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) fails the build

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/.venv/bin}
PY="$BIN/python"
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("'"$ROOT"'/pyproject.toml","rb"))["project"]["version"])')
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct)}
SUITE=${ACCORD_IMAGE_SUITE:-bookworm}
MIRROR=${ACCORD_IMAGE_MIRROR:-http://deb.debian.org/debian}
CACHE=${ACCORD_CACHE_DIR:-$HOME/.cache/accord}/image
OUT="$ROOT/.accord/image"  # what was built: ids, sizes, package versions (gitignored)
STORAGE=(--storage-driver "${ACCORD_STORAGE_DRIVER:-vfs}")
UID_GID=10001
BUILD_INFRA=0
[[ ${1:-} == --infra ]] && BUILD_INFRA=1

say() { printf '[image] %s\n' "$*" >&2; }

need_tools() {
    local missing=()
    for tool in mmdebstrap buildah podman; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    command -v newuidmap >/dev/null || missing+=(uidmap)
    if ((${#missing[@]})); then
        [[ $(id -u) == 0 ]] || { echo "install with apt-get: ${missing[*]}" >&2; exit 1; }
        say "installing Debian's ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap buildah podman uidmap >/dev/null
    fi
}

# A Debian rootfs of exactly these packages, cached as a tarball keyed by the list. man1/ must
# exist although man pages are excluded: openjdk's update-alternatives links its man page there.
base_rootfs() {  # name packages...
    local name=$1; shift
    local key; key=$(printf '%s\n' "$SUITE" "$@" | sha256sum | cut -c1-12)
    local tar="$CACHE/$name-$SUITE-$key.tar"
    if [[ ! -s $tar ]]; then
        say "mmdebstrap $SUITE ($*) into $tar (only the first time; minutes)"
        mkdir -p "$CACHE"
        mmdebstrap --quiet --format=tar --variant=essential --include="$(IFS=,; echo "$*")" \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-include=/usr/share/locale/locale.alias' \
            --setup-hook='mkdir -p "$1"/usr/share/man/man1' \
            --customize-hook='rm -rf "$1"/var/cache/* "$1"/var/log/* "$1"/var/lib/dpkg/*-old' \
            "$SUITE" "$tar.part" "$MIRROR"
        mv "$tar.part" "$tar"
    fi
    echo "$tar"
}

add_user() {  # rootfs
    echo "accord:x:$UID_GID:$UID_GID:Accord:/var/lib/accord:/usr/sbin/nologin" >>"$1/etc/passwd"
    echo "accord:x:$UID_GID:" >>"$1/etc/group"
    echo "accord:!:0::::::" >>"$1/etc/shadow"
    install -d -m 0700 -o $UID_GID -g $UID_GID "$1/var/lib/accord"
    install -d -m 0755 "$1/run/secrets/accord"
}

# The layer: sorted, numeric owners, every mtime SOURCE_DATE_EPOCH, no atime/ctime.
pack() {  # rootfs tar
    find "$1" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"
    tar --sort=name --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        --xattrs --xattrs-exclude='*' -C "$1" -cf "$2" .
}

commit() {  # layer-tar image-name packages-file config...
    local layer=$1 image=$2 packages=$3; shift 3
    local ctr; ctr=$(buildah "${STORAGE[@]}" from --quiet scratch)
    buildah "${STORAGE[@]}" add --quiet "$ctr" "$layer" /
    buildah "${STORAGE[@]}" config --os linux --arch amd64 \
        --label org.opencontainers.image.version="$VERSION" \
        --label org.opencontainers.image.source=accord \
        --label org.opencontainers.image.created="@$SOURCE_DATE_EPOCH" \
        --user "$UID_GID:$UID_GID" "$@" "$ctr"
    buildah "${STORAGE[@]}" commit --quiet --rm --omit-history --timestamp "$SOURCE_DATE_EPOCH" \
        "$ctr" "$image" >/dev/null
    local size id
    size=$(podman "${STORAGE[@]}" image inspect --format '{{.Size}}' "$image")
    id=$(podman "${STORAGE[@]}" image inspect --format '{{.Id}}' "$image")
    printf '%s\n' "$image" "id sha256:$id" "layer sha256:$(sha256sum "$layer" | cut -d' ' -f1)" \
        "size $size bytes" "SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH" >"$OUT/${image##*/}.txt"
    say "$image: $(numfmt --to=iec --suffix=B "$size") ($size bytes), id ${id:0:12}, layer $(sha256sum "$layer" | cut -c1-12) (packages: ${packages#"$ROOT"/})"
}

build_app() {
    local work; work=$(mktemp -d "${TMPDIR:-/var/tmp}/accord-image.XXXXXX")
    trap 'rm -rf "$work"' RETURN
    local base; base=$(base_rootfs accord-base python3.11 ca-certificates tini)
    local r="$work/rootfs"; mkdir "$r"
    tar -C "$r" -xf "$base"
    dpkg-query --admindir="$r/var/lib/dpkg" -W -f '${Package} ${Version}\n' | sort >"$OUT/accord.packages"
    add_user "$r"

    say "Python dependencies (deploy/image/requirements.txt, wheels only) into /opt/accord/site"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
        --only-binary=:all: --target "$r/opt/accord/site" -r "$ROOT/deploy/image/requirements.txt"
    rm -rf "$r/opt/accord/site/bin"  # console scripts with the build's interpreter path
    # The application as the repository lays it out (services/settings.py finds policies/,
    # schemas/ and deploy/ beside services/): no tests, no caches.
    local app="$r/opt/accord/app"
    mkdir -p "$app/deploy"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard services policies schemas deploy/kafka deploy/demo \
        | grep -zv '_test\.rego$' | xargs -0 cp --parents -t "$app")
    say "bytecode (unchecked-hash: valid whatever the mtimes)"
    PYTHONHASHSEED=0 "$PY" -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$r" -p / \
        "$r/opt/accord/site" "$app/services" >/dev/null

    local opa; opa=$("$PY" -c 'from services.devstack.opa import ensure_binary; from services.settings import Settings; print(ensure_binary(Settings()))')
    install -m 0755 "$opa" "$r/usr/local/bin/opa"
    install -m 0755 "$ROOT/deploy/image/entrypoint.py" "$r/usr/local/bin/accord-image"
    sed -i '1i #!/usr/bin/python3.11' "$r/usr/local/bin/accord-image"
    cat >"$r/usr/local/bin/accord" <<'EOF'
#!/bin/sh
exec /usr/bin/python3.11 -c "from services.cli import app; app(prog_name='accord')" "$@"
EOF
    chmod 0755 "$r/usr/local/bin/accord"
    # Build tools must not be in the image: refuse if any slipped in.
    for tool in gcc cc make pip pip3 apt apt-get; do
        [[ ! -e $r/usr/bin/$tool && ! -e $r/usr/local/bin/$tool ]] || { echo "build tool $tool in the image" >&2; exit 1; }
    done
    pack "$r" "$work/layer.tar"
    commit "$work/layer.tar" "localhost/accord:$VERSION" "$OUT/accord.packages" \
        --env PYTHONPATH=/opt/accord/app:/opt/accord/site \
        --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
        --env ACCORD_STATE_DIR=/var/lib/accord \
        --env ACCORD_CACHE_DIR=/var/lib/accord/cache \
        --env HOME=/var/lib/accord \
        --workingdir /opt/accord/app \
        --volume /var/lib/accord \
        --entrypoint '["/usr/bin/tini", "--", "/usr/local/bin/accord-image"]' --cmd '["--help"]'
    podman "${STORAGE[@]}" tag "localhost/accord:$VERSION" localhost/accord:latest
}

build_infra() {
    local work; work=$(mktemp -d "${TMPDIR:-/var/tmp}/accord-infra.XXXXXX")
    trap 'rm -rf "$work"' RETURN
    local base; base=$(base_rootfs accord-infra openjdk-17-jre-headless postgresql-15 tini)
    local r="$work/rootfs"; mkdir "$r"
    tar -C "$r" -xf "$base"
    dpkg-query --admindir="$r/var/lib/dpkg" -W -f '${Package} ${Version}\n' | sort >"$OUT/accord-infra.packages"
    add_user "$r"
    local lib; lib=$("$PY" -c 'from services.devstack.kafka import ensure_jars, lib_dir; from services.settings import Settings; s = Settings(); ensure_jars(s); print(lib_dir(s))')
    mkdir -p "$r/opt/kafka/libs"
    cp "$lib"/*.jar "$r/opt/kafka/libs/"
    install -m 0644 "$ROOT/deploy/kafka/log4j2.properties" "$r/opt/kafka/log4j2.properties"
    install -m 0755 "$ROOT/deploy/image/infra-entrypoint.sh" "$r/usr/local/bin/accord-infra"
    pack "$r" "$work/layer.tar"
    commit "$work/layer.tar" "localhost/accord-infra:$VERSION" "$OUT/accord-infra.packages" \
        --env HOME=/var/lib/accord --workingdir /var/lib/accord \
        --entrypoint '["/usr/bin/tini", "--", "/usr/local/bin/accord-infra"]' --cmd '["kafka"]'
}

need_tools
mkdir -p "$OUT"
build_app
((BUILD_INFRA)) && build_infra
exit 0
