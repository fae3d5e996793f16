#!/usr/bin/env bash
# Runs the Autobahn|Testsuite core cases (1.* to 10.*, 301 cases) against the
# echo example, with the wstest that scripts/install-autobahn.sh installs
# into target/autobahn. It FAILS (exit 1, saying why) when the suite cannot
# be installed or its runner is missing: a conformance step that did not run
# is not a pass. The report is in target/autobahn-report (index.html).
# Usage: scripts/autobahn.sh [CASES]     (wstest patterns; default: 1.* to 10.*)
# AUTOBAHN_DIR=DIR runs the wstest installed in DIR instead, and
# AUTOBAHN_SKIP_INSTALL=1 does not try to install it (the test of this
# script's failure, apps/estuary/tests/first_run.rs, the_autobahn_step_fails_without_its_runner, uses both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR="${AUTOBAHN_DIR:-$PWD/target/autobahn}"
# shellcheck source=lib/autobahn.sh
. scripts/lib/autobahn.sh
if [ "${AUTOBAHN_SKIP_INSTALL:-0}" != 1 ]; then
  mkdir -p target
  if ! scripts/install-autobahn.sh > target/autobahn-install.log 2>&1; then
    tail -n 20 target/autobahn-install.log >&2 || true
    echo "autobahn: FAILED: could not install the test suite (see target/autobahn-install.log)" >&2
    exit 1
  fi
fi
if [ ! -x "$AUTOBAHN_PYTHON" ] || ! autobahn_wstest --help >/dev/null 2>&1; then
  echo "autobahn: FAILED: the runner (wstest under $DIR) is missing or broken; run scripts/install-autobahn.sh" >&2
  exit 1
fi
cargo build --quiet -p estuary-examples --bin echo
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
target/debug/echo "127.0.0.1:$PORT" >/dev/null &
ECHO_PID=$!
trap 'kill $ECHO_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
REPORT="$PWD/target/autobahn-report"
rm -rf "$REPORT"
mkdir -p "$REPORT"
CASES="${1:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,8.*,9.*,10.*}"
python3 - "$REPORT" "ws://127.0.0.1:$PORT" "$CASES" > "$REPORT/spec.json" <<'SPEC'
import json, sys
report, url, cases = sys.argv[1:]
print(json.dumps({
    "outdir": report,
    "servers": [{"agent": "estuary-echo", "url": url}],
    "cases": [case for case in cases.replace(",", " ").split() if case],
    "exclude-cases": [],
    "exclude-agent-cases": {},
}))
SPEC
(cd "$REPORT" && autobahn_wstest --mode fuzzingclient --spec spec.json > wstest.log 2>&1) ||
  { tail -n 20 "$REPORT/wstest.log" >&2; exit 1; }
python3 scripts/autobahn-summary.py "$REPORT" "$REPORT/wstest.log"
