#!/usr/bin/env bash
# Installs valgrind (Debian's package), which the benchmark harness's
# `instructions` scenario runs the servers under (its smoke run is part of
# the test suite). Safe to rerun: a valgrind already on PATH is kept.
set -euo pipefail
command -v valgrind >/dev/null && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update
$SUDO apt-get install -y valgrind
