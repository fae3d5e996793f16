#!/usr/bin/env bash
# Installs Debian's nginx for the deployment test (apps/estuary/tests/nginx.rs
# runs the configuration of docs/DEPLOY.md in front of `estuary serve`).
# Does nothing when nginx is there. Only the binary is used: the test starts
# its own nginx on a free port with its own prefix; the system service is
# left stopped.
set -euo pipefail
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "install-nginx: apt-get is missing; install nginx yourself" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# policy-rc.d keeps the package from starting the system nginx on port 80.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -q nginx
