#!/usr/bin/env bash
# Creates target/django-venv: Django with the PostgreSQL driver (psycopg), for the
# estuary-django tests. Separate from the interop venv, which stays as it is. Safe to rerun.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/scripts/django-requirements.txt"
VENV="$ROOT/target/django-venv"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"
STAMP="$VENV/.estuary-requirements.sha256"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
echo "$WANT" > "$STAMP"
