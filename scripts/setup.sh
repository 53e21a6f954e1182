#!/usr/bin/env bash
# Creates .venv and installs what requirements*.txt name; does nothing when they are unchanged.
# --ray adds Ray (the experiment backend that shards over GPUs); --dev adds Ray and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
files=(requirements.txt requirements-nodeps.txt)
extras=()
case "${1:-}" in
  --dev) extras=(requirements-ray.txt requirements-dev.txt) ;;
  --ray) extras=(requirements-ray.txt) ;;
esac
files+=("${extras[@]}")
stamp=".venv/.installed-$(cat "${files[@]}" | sha256sum | cut -c1-16)"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ]; then
  # torch is pinned in requirements.txt and installed in this same command, so pip takes the CPU build.
  args=(-r requirements.txt)
  for extra in "${extras[@]}"; do args+=(-r "$extra"); done
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${args[@]}"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
  touch "$stamp"
fi
