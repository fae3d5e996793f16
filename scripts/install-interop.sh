#!/usr/bin/env bash
# Creates target/interop-venv: the real Django + channels_redis stack that the
# interop tests drive through shared/interop/interop_probe.py. Safe to rerun.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${ESTUARY_SHARED:-$(cd "$ROOT/.." && pwd)/shared}"
REQ="$SHARED/interop/requirements.txt"
VENV="$ROOT/target/interop-venv"
if [ ! -f "$REQ" ]; then
  echo "install-interop: $REQ not found (set ESTUARY_SHARED to the shared/ folder)" >&2
  exit 1
fi
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"
STAMP="$VENV/.estuary-requirements.sha256"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
echo "$WANT" > "$STAMP"
