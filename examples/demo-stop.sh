#!/usr/bin/env bash
# `make demo-stop`: stop what `make demo` started (replicator, emulators, the local PostgreSQL).
set -uo pipefail
cd "$(dirname "$0")/.."
STATE=.local/demo
for name in replicator notion pinecone; do
  if [ -f "$STATE/$name.pid" ]; then
    pid=$(cat "$STATE/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" && echo "stopped $name (pid $pid)"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$STATE/$name.pid"
  fi
done
# The emulators keep their state in memory: their Notion ids are gone with them.
rm -f "$STATE/notion-ids"
.venv/bin/python -m tests.pgcluster stop --dir .local/pg && echo "stopped PostgreSQL (.local/pg)"
