#!/usr/bin/env bash
# Installs redis-sentinel (Debian's package), which the Sentinel failover tests
# start beside their own primary and replica redis-server. Safe to rerun: a
# redis-sentinel already on PATH is kept.
set -euo pipefail
command -v redis-sentinel >/dev/null && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update
$SUDO apt-get install -y redis-sentinel
