#!/usr/bin/env bash
# Starts one benchmark peer in the foreground: bench/peers/start.sh NAME PORT
# NAME: django-memory | django-redis | django-pubsub | node | naive-rust. The server is exec'd,
# so this script's pid is the server's (the harness reads /proc/PID/stat).
# django-redis and django-pubsub read BENCH_REDIS_URL, BENCH_REDIS_PREFIX and
# BENCH_REDIS_MAX_CONNECTIONS (see django/benchchat/settings.py) from the environment.
set -euo pipefail
PEERS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$PEERS/../.." && pwd)"

usage() {
  echo "usage: bench/peers/start.sh django-memory|django-redis|django-pubsub|node|naive-rust PORT" >&2
  exit 2
}
[ $# -eq 2 ] || usage
NAME="$1"
PORT="$2"
[[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || usage

fail() {
  echo "bench/peers/start.sh: $*" >&2
  exit 1
}

case "$NAME" in
  django-memory | django-redis | django-pubsub)
    VENV="$ROOT/target/bench-venv"
    [ -x "$VENV/bin/daphne" ] || fail "$VENV is missing; run bench/peers/install.sh"
    export BENCH_LAYER="${NAME#django-}"
    export DJANGO_SETTINGS_MODULE=benchchat.settings
    export PYTHONPATH="$PEERS/django${PYTHONPATH:+:$PYTHONPATH}"
    cd "$PEERS/django"
    exec "$VENV/bin/daphne" -v 0 -b 127.0.0.1 -p "$PORT" benchchat.asgi:application
    ;;
  node)
    [ -d "$PEERS/node/node_modules/ws" ] || fail "node_modules is missing; run bench/peers/install.sh"
    cd "$ROOT"
    exec node bench/peers/node/server.js "$PORT"
    ;;
  naive-rust)
    BIN="$ROOT/target/release/naive-broadcast"
    [ -x "$BIN" ] || fail "$BIN is not built; run: cargo build --release -p naive-broadcast"
    exec "$BIN" --bind "127.0.0.1:$PORT"
    ;;
  *)
    usage
    ;;
esac
