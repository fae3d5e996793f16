#!/usr/bin/env bash
# Runs the Autobahn|Testsuite core cases (1.* to 10.*, 301 cases) against the
# echo example. Needs the shared Autobahn runner beside the checkout
# (../shared/tools/autobahn, or $ESTUARY_SHARED/tools/autobahn).
# Usage: scripts/autobahn.sh [CASES]     (default: core)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED="${ESTUARY_SHARED:-$(cd .. && pwd)/shared}"
RUNNER="$SHARED/tools/autobahn/run.sh"
if [ ! -x "$RUNNER" ] && [ ! -f "$RUNNER" ]; then
  echo "autobahn: runner not found at $RUNNER; skipped" >&2
  exit 0
fi
if ! bash "$RUNNER" --install >/tmp/estuary-autobahn-install.log 2>&1; then
  echo "autobahn: could not install the test suite (see /tmp/estuary-autobahn-install.log); skipped" >&2
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
REPORT="target/autobahn"
mkdir -p "$REPORT"
bash "$RUNNER" "ws://127.0.0.1:$PORT" "$REPORT" "${1:-core}" | tail -n 4
