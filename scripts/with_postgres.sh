#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server (Debian's packages, as the postgres user, its socket in a
# temporary folder, no TCP) and COMPRESSLENS_TEST_POSTGRES pointing at it, so the database tests run on it too.
# Without PostgreSQL installed it runs the command as it is.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || ! id postgres >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "with_postgres: no PostgreSQL server here (or not root); running without it" >&2
  exec "$@"
fi
dir=$(mktemp -d)
chown postgres "$dir"
runuser -u postgres -- "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-k $dir -c listen_addresses=''" start >/dev/null
stop() { runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap stop EXIT
export COMPRESSLENS_TEST_POSTGRES="postgresql+psycopg://postgres@/postgres?host=$dir"
"$@"
