#!/usr/bin/env bash
# Validates an AsyncAPI document (default docs/asyncapi.yaml) with the AsyncAPI CLI, pinned,
# installed from npm on first use into the cache (ACCORD_CACHE_DIR, ~/.cache/accord by default;
# about 1.5 GB, once). Node.js and npm come from Debian's packages if missing. The CLI's usage
# metrics are off: its config file lives in the cache, not in $HOME; npm's download cache too.
set -euo pipefail
VERSION=4.1.1  # the last release that runs on Node.js < 24 (5.x needs 24)
DOC=${1:-docs/asyncapi.yaml}
CACHE=${ACCORD_CACHE_DIR:-$HOME/.cache/accord}
DIR=$CACHE/asyncapi-cli-$VERSION
CLI=$DIR/node_modules/.bin/asyncapi
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ ! -x "$CLI" ]; then
  echo "asyncapi: installing @asyncapi/cli@$VERSION into $DIR (only the first time; minutes)"
  mkdir -p "$DIR"
  npm install --prefix "$DIR" --cache "$CACHE/npm" --no-audit --no-fund --loglevel=error \
    "@asyncapi/cli@$VERSION"
fi
export ASYNCAPI_METRICS_CONFIG_PATH=$DIR/analytics.json
if [ ! -f "$ASYNCAPI_METRICS_CONFIG_PATH" ]; then
  echo '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"none"}' \
    >"$ASYNCAPI_METRICS_CONFIG_PATH"
fi
"$CLI" validate "$DOC" --fail-severity error
