#!/usr/bin/env bash
# Fuzzes the push API against its own OpenAPI document
# (apps/estuary/openapi.json) with schemathesis: `estuary serve` on a free
# port with a push token, every check on (no 5xx, statuses, content types,
# headers and bodies as documented, invalid requests refused, valid ones
# accepted, auth enforced). Fails on any finding. About 30 seconds.
# Usage: scripts/schemathesis.sh [MAX_EXAMPLES]   (per operation; default 200)
#
# Only the token mode is fuzzed: the document describes a server with a
# push_token. With push_insecure the same routes take requests without one,
# which schemathesis rightly reports as ignored authentication.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-schemathesis.sh
cargo build --quiet -p estuary-cli --bin estuary
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
LOG="target/schemathesis-server.log"
ESTUARY_PUSH_TOKEN="$TOKEN" NO_COLOR=1 target/debug/estuary serve --bind "127.0.0.1:$PORT" >"$LOG" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
status=0
# From target/: schemathesis keeps its cache of failing cases in the current
# folder (.schemathesis/), and replays them first on the next run.
(cd target && schemathesis-venv/bin/schemathesis run "http://127.0.0.1:$PORT/api/openapi.json" \
  --wait-for-schema 30 \
  --header "Authorization: Bearer $TOKEN" \
  --checks all \
  --max-examples "${1:-200}" \
  --generation-database none \
  --no-color) || status=$?
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "schemathesis: the server is no longer running; its log:" >&2
  tail -n 40 "$LOG" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "schemathesis: findings above (server log: $LOG)" >&2
fi
exit "$status"
