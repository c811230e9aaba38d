#!/bin/sh
# The pilot's infrastructure image (localhost/accord-infra): `kafka` or `postgres`.
#
# Both read what `accord pilot init` (the accord image's pilot-init role) wrote into the
# shared state volume /var/lib/accord: the rendered broker configuration, its certificate and
# the super user's SCRAM credential (kafka/), the database password (postgres/password).
# Storage is formatted or initialised on first start only. Nothing secret is printed.
set -eu
STATE=${ACCORD_STATE_DIR:-/var/lib/accord}

wait_for() {  # file
    i=0
    while [ ! -s "$1" ]; do
        i=$((i + 1))
        [ "$i" -le 300 ] || { echo "accord-infra: $1 missing: run the pilot-init service first" >&2; exit 1; }
        sleep 1
    done
}

case "${1:-}" in
kafka)
    wait_for "$STATE/kafka/scram"  # pilot-init writes it after the configuration
    set -f  # the classpath's * is Java's wildcard, not the shell's
    java="java -Xms256m -Xmx${ACCORD_KAFKA_HEAP:-768m} -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties -cp /opt/kafka/libs/*"
    if [ ! -f "$STATE/kafka/data/meta.properties" ]; then
        echo "accord-infra: formatting Kafka's storage (KRaft, with the super user's credential)"
        $java kafka.tools.StorageTool format -t "$(cat "$STATE/kafka/cluster.id")" \
            -c "$STATE/kafka/server.properties" --add-scram "$(cat "$STATE/kafka/scram")" >/dev/null
    fi
    exec $java kafka.Kafka "$STATE/kafka/server.properties"
    ;;
postgres)
    wait_for "$STATE/postgres/password"
    bin=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
    data="$STATE/postgres/data"
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data" && chmod 0700 "$data"
        pw=$(mktemp) && cp "$STATE/postgres/password" "$pw"
        "$bin/initdb" -D "$data" -U accord --pwfile="$pw" --auth=scram-sha-256 -E UTF8 \
            --locale=C.UTF-8 >/dev/null
        rm -f "$pw"
        echo "host all all 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
        echo 'CREATE DATABASE accord' | "$bin/postgres" --single -D "$data" postgres >/dev/null
    fi
    exec "$bin/postgres" -D "$data" -p "${ACCORD_POSTGRES_PORT:-5432}" \
        -c listen_addresses="${ACCORD_POSTGRES_LISTEN:-*}" -c unix_socket_directories=/tmp
    ;;
*)
    echo "usage: accord-infra kafka|postgres" >&2
    exit 2
    ;;
esac
