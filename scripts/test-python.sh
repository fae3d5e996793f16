#!/usr/bin/env bash
# Runs the Python tests: the django-estuary package's (python/django-estuary/tests)
# and the example project's (examples/django-workers), with Django's test
# runner in target/django-venv, the package installed from this tree
# (scripts/install-django-test.sh). One test needs Redis at 127.0.0.1:6379
# (set DJANGO_ESTUARY_NO_REDIS=1 to skip it, named, where there is none).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install-django-test.sh"
PYTHON="$ROOT/target/django-venv/bin/python"
echo "django-estuary:"
(cd "$ROOT/python/django-estuary" && "$PYTHON" -m django test --settings=tests.settings)
echo "examples/django-workers:"
(cd "$ROOT/examples/django-workers" && "$PYTHON" manage.py test)
