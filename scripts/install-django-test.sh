#!/usr/bin/env bash
# Creates target/django-venv: Django with the PostgreSQL driver (psycopg), for the
# Django tests (channels and channels_redis too). Separate from the interop venv, which
# stays as it is. Safe to rerun.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
REQ="$ROOT/scripts/django-requirements.txt"
VENV="$ROOT/target/django-venv"
ensure_venv "$VENV" "$REQ"
