#!/usr/bin/env bash
# Creates .venv and installs what requirements*.txt name; does nothing when they are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
files=(requirements.txt requirements-nodeps.txt)
[ "${1:-}" = "--dev" ] && files+=(requirements-dev.txt)
stamp=".venv/.installed-$(cat "${files[@]}" | sha256sum | cut -c1-16)"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ]; then
  # torch is pinned in requirements.txt and installed in this same command, so pip takes the CPU build.
  args=(-r requirements.txt)
  [ "${1:-}" = "--dev" ] && args+=(-r requirements-dev.txt)
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${args[@]}"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
  touch "$stamp"
fi
