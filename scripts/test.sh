#!/usr/bin/env bash
# Installs what is missing (with the test tools and, as root, Debian's Chromium), then runs the suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # Playwright cannot download its own browser here; the browser tests drive Debian's.
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
