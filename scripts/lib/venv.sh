# Sourced by the install scripts: `ensure_venv VENV REQUIREMENTS [EXECUTABLE]`
# makes a Python virtual environment at VENV with the pinned REQUIREMENTS, and
# does nothing while it exists (VENV/bin/EXECUTABLE, python by default) with
# the same pins: a hash of the requirements file is kept beside it.
ensure_venv() {
  local venv="$1" req="$2" exe="${3:-python}"
  local want stamp
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  stamp="$venv/.estuary-requirements.sha256"
  if [ -x "$venv/bin/$exe" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
}
