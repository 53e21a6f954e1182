#!/usr/bin/env bash
# Installs what is missing, then starts the dashboard on http://localhost:8501.
# Server settings: .streamlit/config.toml; the cookie secret is this install's own (COMPRESSLENS_HOME/cookie_secret),
# and COMPRESSLENS_ALLOWED_HOSTS (comma separated) lists the host names a shared server answers to.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
home=${COMPRESSLENS_HOME:-$HOME/.compresslens}
mkdir -p "$home"
if [ ! -s "$home/cookie_secret" ]; then
  (umask 077 && .venv/bin/python -c "import secrets; print(secrets.token_hex(32))" > "$home/cookie_secret")
fi
STREAMLIT_SERVER_COOKIE_SECRET=$(cat "$home/cookie_secret")
export STREAMLIT_SERVER_COOKIE_SECRET
# Bound to localhost unless asked otherwise (--server.address 0.0.0.0); a server listening beyond it signs people in.
export STREAMLIT_SERVER_ADDRESS=${STREAMLIT_SERVER_ADDRESS:-localhost}
args=(--server.headless true)
IFS=, read -ra hosts <<< "${COMPRESSLENS_ALLOWED_HOSTS:-}"
for host in "${hosts[@]}"; do
  args+=(--server.allowedHosts "$host")
done
exec .venv/bin/python scripts/serve.py run app.py "${args[@]}" "$@"
