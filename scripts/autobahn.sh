#!/usr/bin/env bash
# Runs the Autobahn|Testsuite core cases (1.* to 10.*, 301 cases) against the
# echo example, with the wstest that scripts/install-autobahn.sh installs
# into target/autobahn (skipped, saying why, when it cannot be installed).
# The report is in target/autobahn-report (index.html).
# Usage: scripts/autobahn.sh [CASES]     (wstest patterns; default: 1.* to 10.*)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR="$PWD/target/autobahn"
# shellcheck source=lib/autobahn.sh
. scripts/lib/autobahn.sh
if ! scripts/install-autobahn.sh > target/autobahn-install.log 2>&1; then
  echo "autobahn: could not install the test suite (see target/autobahn-install.log); skipped" >&2
  exit 0
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
