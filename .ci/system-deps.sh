#!/usr/bin/env bash
# Installs the system packages omics-cdc needs on Debian/Ubuntu: a PostgreSQL server, the wal2json plugin that
# matches its major version, what a Python virtual environment needs, and promtool (from prometheus). Idempotent; a no-op when all is there.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "system-deps: not root and no sudo; install postgresql and postgresql-<major>-wal2json by hand" >&2
    exit 1
  fi
fi

have_pg() { ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; }
pg_major() { ls -d /usr/lib/postgresql/*/ 2>/dev/null | sort -V | tail -n1 | xargs -r basename; }

need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
have_pg || need+=(postgresql)
# promtool validates docker/prometheus/ in the unit tests; Debian's prometheus package is 19 MB to download
# (96 MB installed, ~23 s with --no-install-recommends, measured on Debian 12).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ "${#need[@]}" -gt 0 ]; then
  echo "system-deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

major=$(pg_major)
if [ ! -f "/usr/lib/postgresql/${major}/lib/wal2json.so" ]; then
  echo "system-deps: installing postgresql-${major}-wal2json"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "postgresql-${major}-wal2json" >/dev/null
fi
echo "system-deps: PostgreSQL ${major} with wal2json is installed"
