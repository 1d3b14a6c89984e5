#!/usr/bin/env bash
# `make demo`: the whole flow on local defaults. Starts a local PostgreSQL with wal2json (.local/pg), the Notion
# and Pinecone emulators (unless NOTION_API_KEY / PINECONE_API_KEY name the real services), creates the Notion
# databases and the Pinecone index, ingests the sample data into Postgres, runs the replicator until it has caught
# up, then prints `replicator status` and the answer to a sample `replicator query`; then (with the Notion emulator) a
# scientist writes a note on the lipidomics page, and `replicator query` finds it through the narrative capture, and
# `replicator rollout status` shows the stage. `make demo-stop` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
STATE=.local/demo
DB_PORT=${DB_PORT:-54329}
NOTION_EMULATOR_PORT=${NOTION_EMULATOR_PORT:-8701}
PINECONE_EMULATOR_PORT=${PINECONE_EMULATOR_PORT:-8702}
mkdir -p "$STATE"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

start_bg() {  # name, command… — a background process with a pid file and a log under .local/demo
  local name=$1; shift
  if [ -f "$STATE/$name.pid" ] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then return 0; fi
  nohup "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

wait_http() {  # url
  for _ in $(seq 1 100); do
    if "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" \
      2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "demo: $1 did not answer" >&2
  return 1
}

# A second `make demo` starts over: the emulators keep their state in memory, so the database's record of page ids
# and vectors must start empty with them.
for name in replicator notion pinecone; do
  if [ -f "$STATE/$name.pid" ]; then kill -TERM "$(cat "$STATE/$name.pid")" 2>/dev/null || true; rm -f "$STATE/$name.pid"; fi
done
rm -f "$STATE/notion-ids"
sleep 1

say "PostgreSQL with wal2json"
admin_url=$("$BIN/python" -m tests.pgcluster start --dir .local/pg --port "$DB_PORT")
export POSTGRES_URL="postgresql://postgres@127.0.0.1:${DB_PORT}/omics_demo"
psql "$admin_url" -qtAc "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'omics_demo'" >/dev/null
psql "$admin_url" -qc "DROP DATABASE IF EXISTS omics_demo WITH (FORCE)" 2>/dev/null
psql "$admin_url" -qc "CREATE DATABASE omics_demo"
"$BIN/alembic" upgrade head
echo "database: $POSTGRES_URL"

: >"$STATE/env"
echo "export POSTGRES_URL=$POSTGRES_URL" >>"$STATE/env"

if [ -z "${NOTION_API_KEY:-}" ]; then
  say "Notion emulator (NOTION_API_KEY is not set)"
  start_bg notion "$BIN/python" -m tests.emulators notion --port "$NOTION_EMULATOR_PORT"
  export NOTION_BASE_URL="http://127.0.0.1:${NOTION_EMULATOR_PORT}" NOTION_API_KEY=ntn_emulator_token
  wait_http "$NOTION_BASE_URL/_emulator/state"
  parent_page=$("$BIN/python" -c "import json, sys, urllib.request; \
print(json.load(urllib.request.urlopen(sys.argv[1]))['root_page_id'])" "$NOTION_BASE_URL/_emulator/state")
  echo "export NOTION_BASE_URL=$NOTION_BASE_URL NOTION_API_KEY=$NOTION_API_KEY" >>"$STATE/env"
else
  parent_page=${NOTION_PARENT_PAGE_ID:?set NOTION_PARENT_PAGE_ID: the page under which the demo creates its databases}
fi
if [ -z "${NOTION_EXP_DATA_DB_ID:-}" ]; then
  if [ ! -s "$STATE/notion-ids" ]; then
    "$BIN/replicator" notion init --parent-page "$parent_page" >"$STATE/notion-ids"
  fi
  set -a; . "$STATE/notion-ids"; set +a
  sed 's/^/export /' "$STATE/notion-ids" >>"$STATE/env"
fi

if [ -z "${PINECONE_API_KEY:-}" ]; then
  say "Pinecone emulator (PINECONE_API_KEY is not set)"
  start_bg pinecone "$BIN/python" -m tests.emulators pinecone --port "$PINECONE_EMULATOR_PORT"
  export PINECONE_CONTROLLER_HOST="http://127.0.0.1:${PINECONE_EMULATOR_PORT}" PINECONE_API_KEY=pc_emulator_key
  wait_http "$PINECONE_CONTROLLER_HOST/_emulator/state"
  echo "export PINECONE_CONTROLLER_HOST=$PINECONE_CONTROLLER_HOST PINECONE_API_KEY=$PINECONE_API_KEY" >>"$STATE/env"
fi
export PINECONE_INDEX=${PINECONE_INDEX:-omics-cdc-demo} EMBEDDING_PROVIDER=${EMBEDDING_PROVIDER:-local}
export REPLICATOR_SINKS=${REPLICATOR_SINKS:-notion,pinecone} REPLICATOR_HTTP_ADDR=${REPLICATOR_HTTP_ADDR:-127.0.0.1:9187}
export NARRATIVE_CAPTURE=${NARRATIVE_CAPTURE:-true} NARRATIVE_POLL_S=${NARRATIVE_POLL_S:-2}
{
  echo "export PINECONE_INDEX=$PINECONE_INDEX EMBEDDING_PROVIDER=$EMBEDDING_PROVIDER"
  echo "export REPLICATOR_SINKS=$REPLICATOR_SINKS REPLICATOR_HTTP_ADDR=$REPLICATOR_HTTP_ADDR"
  echo "export NARRATIVE_CAPTURE=$NARRATIVE_CAPTURE NARRATIVE_POLL_S=$NARRATIVE_POLL_S"
} >>"$STATE/env"
"$BIN/replicator" pinecone init

say "Ingest the sample data into Postgres (and nowhere else)"
D=examples/data
"$BIN/ingest" program "ALS Biomarkers" --description "CSF lipid and metabolite markers of ALS" --disease ALS
"$BIN/ingest" experiment "ALS CSF lipidomics" --type patient --program "ALS Biomarkers" --disease ALS
"$BIN/ingest" dataset "$D/samples/sample_lipidomics_data.csv" --omics-type lipidomics --program "ALS Biomarkers" \
  --experiment "ALS CSF lipidomics" --disease ALS --organism "Homo sapiens"
"$BIN/ingest" dataset "$D/samples/ST004396.csv" --omics-type metabolomics --name "Fragile X lymphoblastoid metabolome" \
  --organism "Homo sapiens" --disease "Fragile X syndrome"
"$BIN/ingest" dataset "$D/samples/test_transcriptomics_mixed.csv" --omics-type transcriptomics
"$BIN/ingest" dataset "$D/samples/test_proteomics_mixed.csv" --omics-type proteomics
"$BIN/ingest" mwtab "$D/mwtab/ST000001_AN000001.txt"
"$BIN/ingest" mwtab "$D/mwtab/ST000122_AN000204.json"
"$BIN/ingest" signature "$D/samples/ALS-CSF-Core-6Ceramides.tsv" --program "ALS Biomarkers"

say "Replicator: wal2json → outbox → Notion and Pinecone"
start_bg replicator "$BIN/replicator" run
echo "replicator log: $STATE/replicator.log"
caught_up=0
for _ in $(seq 1 600); do
  if "$BIN/replicator" status --json 2>/dev/null | "$BIN/python" -c '
import json, sys
s = json.load(sys.stdin)
sinks = [k for k in s["sinks"] if k["enabled"]]
ok = s["slot"]["exists"] and s["slot"]["lag_seconds"] is not None and sinks
ok = ok and all(k["pending"] == 0 for k in sinks) and all(k["last_success_at"] for k in sinks)
sys.exit(0 if ok else 1)'; then caught_up=1; break; fi
  if ! kill -0 "$(cat "$STATE/replicator.pid")" 2>/dev/null; then
    echo "demo: the replicator stopped; its log:" >&2; tail -n 30 "$STATE/replicator.log" >&2; exit 1
  fi
  sleep 0.5
done
[ "$caught_up" = 1 ] || { echo "demo: the replicator did not catch up in 5 minutes" >&2; exit 1; }

say "replicator status"
"$BIN/replicator" status
say 'replicator query "ceramides increased in ALS cerebrospinal fluid"'
"$BIN/replicator" query "ceramides increased in ALS cerebrospinal fluid" --top-k 3

if [ -f "$STATE/notion.pid" ] && [ "$NARRATIVE_CAPTURE" = true ]; then
  NOTE="Scientist's note: the ceramide rise was confirmed in a second ALS cohort; neurofilament light chain tracks Cer 24:1."
  say "A scientist writes a note on the lipidomics page in Notion (the emulator's person token)"
  "$BIN/python" examples/demo_note.py "$NOTE"
  found=0
  for _ in $(seq 1 120); do
    if "$BIN/replicator" query "second ALS cohort neurofilament light chain" --source notion --top-k 1 --json \
        2>/dev/null | "$BIN/python" -c '
import json, sys
hits = json.load(sys.stdin)["hits"]
sys.exit(0 if hits and hits[0]["notes"] and "neurofilament" in hits[0]["notes"][0]["text"] else 1)' 2>/dev/null; then
      found=1; break
    fi
    sleep 0.5
  done
  [ "$found" = 1 ] || { echo "demo: the note did not reach Pinecone in 60 s; see $STATE/replicator.log" >&2; exit 1; }
  say 'replicator query "second ALS cohort neurofilament light chain" (the note, captured into Postgres, then Pinecone)'
  "$BIN/replicator" query "second ALS cohort neurofilament light chain" --top-k 2
  say "replicator verify (the final validation: Postgres against Notion and Pinecone)"
  "$BIN/replicator" verify || true
  say "replicator rollout status"
  "$BIN/replicator" rollout status
fi

say "Running"
cat <<MSG
Started: PostgreSQL (.local/pg, port $DB_PORT), the replicator (pid $(cat "$STATE/replicator.pid"), log $STATE/replicator.log)$(
  [ -f "$STATE/notion.pid" ] && echo ", the Notion emulator (port $NOTION_EMULATOR_PORT)")$(
  [ -f "$STATE/pinecone.pid" ] && echo ", the Pinecone emulator (port $PINECONE_EMULATOR_PORT)").
Try it:   source $STATE/env && .venv/bin/replicator status --watch
          .venv/bin/ingest dataset <file> --omics-type lipidomics    # then watch it reach Notion and Pinecone
Stop:     make demo-stop
MSG
