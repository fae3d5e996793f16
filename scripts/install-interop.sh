#!/usr/bin/env bash
# Creates target/interop-venv: the real Django + channels_redis stack that the
# interop tests drive through tests/interop/channels_probe.py, pinned by
# scripts/interop-requirements.txt. Safe to rerun.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
ensure_venv "$ROOT/target/interop-venv" "$ROOT/scripts/interop-requirements.txt"
