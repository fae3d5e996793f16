#!/usr/bin/env bash
# Installs Autobahn|Testsuite's wstest into target/autobahn for
# scripts/autobahn.sh. wstest runs on Python 2.7 only, which Debian 12 no
# longer ships: CPython 2.7 is unpacked from Debian 11 packages (fetched with
# a private apt state; nothing is installed system-wide), pip for 2.7 is
# bootstrapped, then autobahntestsuite is installed with the versions pinned
# in scripts/autobahn-constraints.txt. Does nothing while the install is
# there with the same pins. Needs apt-get, dpkg-deb, gcc, python3 with pip,
# and the network; AUTOBAHN_DEBIAN_MIRROR names a Debian archive that still
# holds bullseye (default: the one apt uses).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/target/autobahn"
PINS="$ROOT/scripts/autobahn-constraints.txt"
# shellcheck source=lib/autobahn.sh
. "$ROOT/scripts/lib/autobahn.sh"

want="$(sha256sum "$PINS" | cut -d' ' -f1)"
if [ -x "$AUTOBAHN_PYTHON" ] && [ "$(cat "$DIR/installed.sha256" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
for tool in apt-get dpkg-deb gcc python3; do
  command -v "$tool" >/dev/null || { echo "install-autobahn: $tool is missing" >&2; exit 1; }
done
rm -rf "$DIR"
mkdir -p "$DIR/apt/lists/partial" "$DIR/apt/archives/partial" "$DIR/apt/none" "$DIR/debs" "$DIR/wheels"
work="$DIR/apt"
mirror="${AUTOBAHN_DEBIAN_MIRROR:-$(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
  awk '$2 !~ /-/ { print $1; exit }')}"
mirror="${mirror:-http://deb.debian.org/debian/}"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-bullseye-stable.gpg] ${mirror%/} bullseye main" > "$work/sources.list"
: > "$work/status"
apt_private=(apt-get -q
  -o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/none"
  -o "Dir::Etc::Preferences=$work/none/none" -o "Dir::Etc::PreferencesParts=$work/none"
  -o "Dir::State=$work" -o "Dir::State::Lists=$work/lists" -o "Dir::State::Status=$work/status"
  -o "Dir::Cache=$work" -o "Dir::Cache::Archives=$work/archives"
  -o "Debug::NoLocking=1" -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false")
if [ "$(id -u)" = 0 ]; then apt_private+=(-o "APT::Sandbox::User=root"); fi
echo "install-autobahn: CPython 2.7 from Debian 11 ($mirror)" >&2
"${apt_private[@]}" update > "$DIR/apt.log" 2>&1 || { cat "$DIR/apt.log" >&2; exit 1; }
# The interpreter, its standard library and headers (wsaccel is compiled),
# and the two libraries Debian 12 dropped that it links to.
(cd "$DIR/debs" && "${apt_private[@]}" download python2.7 python2.7-minimal python2.7-dev \
  libpython2.7 libpython2.7-minimal libpython2.7-stdlib libpython2.7-dev libssl1.1 libffi7) \
  >> "$DIR/apt.log" 2>&1 || { cat "$DIR/apt.log" >&2; exit 1; }
for deb in "$DIR/debs"/*.deb; do dpkg-deb -x "$deb" "$DIR/py27"; done
autobahn_env
"$AUTOBAHN_PYTHON" -c 'import ssl, zlib, ctypes' || { echo "install-autobahn: python2.7 does not start" >&2; exit 1; }

echo "install-autobahn: pip for Python 2.7, then autobahntestsuite" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --dest "$DIR/wheels" pip==20.3.4 setuptools==44.0.0 wheel==0.37.1
"$AUTOBAHN_PYTHON" "$DIR/wheels/pip-20.3.4-py2.py3-none-any.whl/pip" install --quiet --no-warn-script-location \
  --no-index --find-links "$DIR/wheels" pip==20.3.4 setuptools==44.0.0 wheel==0.37.1
include="$DIR/py27/usr/include"
CFLAGS="-I$include/python2.7 -I$include" LDFLAGS="-L$AUTOBAHN_LIBS" \
  "$AUTOBAHN_PYTHON" -m pip install --quiet --no-warn-script-location --constraint "$PINS" autobahntestsuite > "$DIR/pip.log" 2>&1 ||
  { tail -n 30 "$DIR/pip.log" >&2; exit 1; }
autobahn_wstest --autobahnversion > /dev/null
rm -rf "$DIR/apt" "$DIR/debs"
echo "$want" > "$DIR/installed.sha256"
