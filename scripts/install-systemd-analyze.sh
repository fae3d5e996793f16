#!/usr/bin/env bash
# Installs systemd-analyze (Debian's systemd package) for the test that
# checks docs/DEPLOY.md's unit files (apps/estuary/tests/systemd_units.rs:
# `systemd-analyze verify` on the units exactly as the page shows them).
# Only the binary is used, against a private root: nothing is started.
# Safe to rerun: a systemd-analyze already on PATH is kept.
set -euo pipefail
command -v systemd-analyze >/dev/null && exit 0
command -v apt-get >/dev/null || { echo "install-systemd-analyze: apt-get is missing; install systemd yourself" >&2; exit 1; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q systemd
