#!/usr/bin/env bash
# Creates target/schemathesis-venv: schemathesis at the versions pinned in
# scripts/schemathesis-requirements.txt, for scripts/schemathesis.sh. Kept
# apart from the interop venv so that neither's pins constrain the other.
# Safe to rerun: does nothing while the pins are unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/scripts/schemathesis-requirements.txt"
VENV="$ROOT/target/schemathesis-venv"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"
STAMP="$VENV/.estuary-requirements.sha256"
if [ -x "$VENV/bin/schemathesis" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
echo "$WANT" > "$STAMP"
