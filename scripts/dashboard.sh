#!/usr/bin/env bash
# Installs what is missing, then starts the dashboard on http://localhost:8501.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/serve.py run app.py --server.headless true --browser.gatherUsageStats false "$@"
