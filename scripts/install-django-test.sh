#!/usr/bin/env bash
# Creates target/django-venv: Django with the PostgreSQL driver (psycopg), for the
# Django tests (channels and channels_redis too), and installs python/django-estuary
# into it. Separate from the interop venv, which stays as it is. Safe to rerun.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
REQ="$ROOT/scripts/django-requirements.txt"
VENV="$ROOT/target/django-venv"
ensure_venv "$VENV" "$REQ"
# The django-estuary package from this tree, editable (its dependencies are pinned
# above): the Rust tests' Django workers import it, and scripts/test-python.sh tests it.
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
  -e "$ROOT/python/django-estuary"
