#!/usr/bin/env bash
# Creates target/interop-venv: the real Django + channels_redis stack that the
# interop tests drive through shared/interop/interop_probe.py. Safe to rerun.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
SHARED="${ESTUARY_SHARED:-$(cd "$ROOT/.." && pwd)/shared}"
REQ="$SHARED/interop/requirements.txt"
VENV="$ROOT/target/interop-venv"
if [ ! -f "$REQ" ]; then
  echo "install-interop: $REQ not found (set ESTUARY_SHARED to the shared/ folder)" >&2
  exit 1
fi
ensure_venv "$VENV" "$REQ"
