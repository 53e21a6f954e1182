#!/usr/bin/env bash
# Installs what is missing (with the test tools and, as root, Debian's Chromium), then runs the suite offline,
# one test process a core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # Playwright cannot download its own browser here; the browser tests drive Debian's.
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
export HF_HUB_OFFLINE=1
# Most tests wait on Python, not on torch: one test process a core (up to 4) takes a third off the wall time
# on 2 cores. A later `-n 0` runs them all in one process.
workers=$(nproc)
exec .venv/bin/python -m pytest -n $((workers < 4 ? workers : 4)) "$@"
