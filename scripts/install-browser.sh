#!/usr/bin/env bash
# Installs what the browser test (tests/browser) needs; safe to run again.
#  - Debian's Chromium at /usr/bin/chromium (apt-get; needs root, as CI is).
#  - tests/browser/node_modules from package-lock.json (npm ci), when missing or stale.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/tests/browser"

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: /usr/bin/chromium is missing and this is not root; run: apt-get install chromium" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "install-browser: npm (Node.js 20) is required" >&2
  exit 1
fi

# node_modules is stale when it was not installed from the current lockfile.
STAMP="$DIR/node_modules/.estuary-lock.sha256"
WANT="$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)"
if [ ! -d "$DIR/node_modules/playwright-core" ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$WANT" > "$STAMP"
fi
