# Sourced by scripts/install-autobahn.sh and scripts/autobahn.sh: where the
# Python 2.7 that runs wstest lives (under $DIR, target/autobahn), and how to
# run it.
AUTOBAHN_PYTHON="$DIR/py27/usr/bin/python2.7"
AUTOBAHN_LIBS="$DIR/py27/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)"

# The unpacked interpreter's libraries first; nothing from the user's site.
autobahn_env() {
  export LD_LIBRARY_PATH="$AUTOBAHN_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1
  # pip 20.3's own certificate list is from 2020.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi
  unset PYTHONPATH PYTHONHOME
}

# wstest with its arguments, through the interpreter (its script's #! line
# names the install path).
autobahn_wstest() {
  autobahn_env
  "$AUTOBAHN_PYTHON" -c 'import sys; from autobahntestsuite.wstest import run; sys.argv[0] = "wstest"; run()' "$@"
}
