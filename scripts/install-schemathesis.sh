#!/usr/bin/env bash
# Creates target/schemathesis-venv: schemathesis at the versions pinned in
# scripts/schemathesis-requirements.txt, for scripts/schemathesis.sh. Kept
# apart from the interop venv so that neither's pins constrain the other.
# Safe to rerun: does nothing while the pins are unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
REQ="$ROOT/scripts/schemathesis-requirements.txt"
VENV="$ROOT/target/schemathesis-venv"
ensure_venv "$VENV" "$REQ" schemathesis
