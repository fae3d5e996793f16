#!/usr/bin/env bash
# Installs the benchmark peers' runtimes: the Django venv (target/bench-venv)
# and the Node peer's node_modules. Safe to rerun: each step is skipped while
# the stamp holds the hash of the file it was installed from.
# The naive Rust peer is built separately: cargo build --release -p naive-broadcast
set -euo pipefail
PEERS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$PEERS/../.." && pwd)"
PYTHON="${BENCH_PYTHON:-python3}"

fail() {
  echo "bench/peers/install.sh: $*" >&2
  exit 1
}

# --- Django peer -----------------------------------------------------------
REQ="$PEERS/django/requirements.txt"
VENV="$ROOT/target/bench-venv"
[ -f "$REQ" ] || fail "$REQ not found"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"
STAMP="$VENV/.bench-requirements.sha256"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  :
else
  command -v "$PYTHON" >/dev/null || fail "$PYTHON not found (set BENCH_PYTHON to a Python >= 3.10)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "$PYTHON is older than 3.10, which Django 5.2 needs (set BENCH_PYTHON)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || fail "could not create the venv $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" \
    || fail "pip install -r $REQ failed"
  # Written last, so an interrupted install is redone next time.
  echo "$WANT" > "$STAMP"
fi

# The Django workers example's package (bench/run.py --servers workers-redis),
# from this checkout; quick, so always reinstalled.
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "$ROOT/python/django-estuary" \
  || fail "pip install python/django-estuary failed"

# --- Node peer ---------------------------------------------------------------
NODE_DIR="$PEERS/node"
LOCK="$NODE_DIR/package-lock.json"
[ -f "$LOCK" ] || fail "$LOCK not found"
command -v node >/dev/null || fail "node not found (the Node peer needs Node 20 or later)"
command -v npm >/dev/null || fail "npm not found"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || fail "node $(node --version) is older than 20"
WANT="$(sha256sum "$LOCK" | cut -d' ' -f1)"
STAMP="$NODE_DIR/node_modules/.bench-lock.sha256"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  :
else
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in $NODE_DIR failed"
  echo "$WANT" > "$STAMP"
fi
