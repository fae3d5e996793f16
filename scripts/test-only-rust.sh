#!/usr/bin/env bash
# Runs the plain `cargo test --workspace` as a machine with only Rust would:
# in a network namespace with nothing but loopback (no Redis at :6379, no
# PostgreSQL at :5432, no outside network), with python, redis-server, node
# and Chromium off PATH and the ESTUARY_*_PYTHON variables unset. Every test
# that needs one of those is #[ignore = "needs ..."] and must show as ignored;
# anything else must pass. Needs root or unprivileged user namespaces
# (`unshare --net --mount --map-root-user`); the venvs under target/ are
# hidden under an empty tmpfs for the run.
#
# Extra arguments go to `cargo test` (e.g. `-p estuary-redis`). The build is
# the one `cargo nextest run` / `cargo test` already made: nothing is rebuilt
# when the sources did not change, and cargo runs offline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A PATH of the machine's programs minus the outside services.
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
IFS=: read -ra dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  [ -d "$dir" ] || continue
  for program in "$dir"/*; do
    name="${program##*/}"
    case "$name" in
      python* | pip* | redis-* | node | nodejs | npm | npx | chromium* | chrome* | google-chrome* | psql | postgres* | pg_*) continue ;;
    esac
    [ -x "$program" ] && [ ! -e "$bin/$name" ] && ln -s "$program" "$bin/$name"
  done
done

unset ESTUARY_INTEROP_PYTHON ESTUARY_DJANGO_PYTHON ESTUARY_INTEROP_PROBE
if [ "$(id -u)" = 0 ]; then unshare=(unshare --net --mount); else unshare=(unshare --net --mount --map-root-user); fi
PATH="$bin" CARGO_NET_OFFLINE=true "${unshare[@]}" bash -c '
  ip link set lo up
  # The venvs scripts/install-*.sh made are where the tests look by default.
  for venv in target/interop-venv target/django-venv; do
    if [ -d "$venv" ]; then mount -t tmpfs none "$venv"; fi
  done
  for service in 127.0.0.1:6379 127.0.0.1:5432; do
    if (exec 3<>"/dev/tcp/${service%:*}/${service#*:}") 2>/dev/null; then
      echo "$service answers inside the namespace: not a machine with only Rust" >&2
      exit 1
    fi
  done
  for program in python3 python redis-server node chromium; do
    if command -v "$program" >/dev/null; then echo "$program is on PATH" >&2; exit 1; fi
  done
  exec cargo test --workspace --no-fail-fast "$@"
' only-rust "$@"
