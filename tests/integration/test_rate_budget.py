"""The Notion budget shared through Postgres (``replicator.rate_budget``, ``replicator/budget.py``) on a real server:
the take's refill arithmetic on the server's clock, limiters on separate connections that together never grant more
than ``burst + rate × elapsed``, a 429 penalty seen by every limiter, the local fallback while Postgres is away, and
two Notion "replicas" with one token against the emulator's rate limit — shared budget versus a bucket each."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from replicator.budget import SharedBudget, fingerprint, notion_limiter, sink_limiter
from replicator.config import Settings
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy, RateLimiter, TokenBucket
from replicator.sinks.factory import build_sink
from replicator.sinks.notion import create_databases, notion_client
from replicator.store import rate_budget
from replicator.worker import SinkWorker
from tests.emulators.notion import NotionEmulator
from tests.pgcluster import free_port

Conn = psycopg.Connection[tuple[Any, ...]]


def _key() -> str:
    return fingerprint(f"token-{uuid.uuid4()}")


def _age(conn: Conn, key: str, seconds: float) -> None:
    """Move the row's last refill ``seconds`` into the past (as if that much time had gone by)."""
    conn.execute(
        "UPDATE replicator.rate_budget SET refilled_at = refilled_at - make_interval(secs => %s) WHERE key = %s",
        (seconds, key),
    )


def _grants(conn: Conn, key: str, limit: int = 50) -> int:
    """How many single tokens are granted in a row right now."""
    for n in range(limit):
        answer = rate_budget.take(conn, key)
        assert answer is not None
        if not answer.granted:
            return n
    return limit


def _in_threads(target: Callable[[Any], None], arguments: list[Any], *, timeout_s: float) -> float:
    """Run ``target(argument)`` for each argument, each in its own thread, at once; the seconds they all took."""
    started = time.monotonic()
    threads = [threading.Thread(target=target, args=(argument,)) for argument in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout_s)
    return time.monotonic() - started


# ---- the take, on the server's clock ------------------------------------------------------------------------------


def test_a_take_refills_by_elapsed_server_time_and_never_beyond_the_burst(conn: Conn) -> None:
    key = _key()
    rate_budget.ensure(conn, key, rate=2.0, burst=4.0)
    assert _grants(conn, key) == 4  # a new budget starts full
    answer = rate_budget.take(conn, key)
    assert answer is not None
    assert not answer.granted
    assert 0.3 < answer.wait_s <= 0.5  # one token at 2/s, minus the few ms since the last take
    _age(conn, key, 1.0)
    assert _grants(conn, key) == 2  # one second at 2/s
    _age(conn, key, 100.0)
    assert _grants(conn, key) == 4  # a long idle time saves up the burst, no more
    big = rate_budget.take(conn, key, 3.0)
    assert big is not None
    assert not big.granted
    assert big.wait_s == pytest.approx(1.5, abs=0.05)  # three tokens at 2/s from (almost) empty
    forced = rate_budget.take(conn, key, 3.0, force=True)
    assert forced is not None
    assert forced.granted  # a charge goes into debt ...
    debt = conn.execute("SELECT tokens FROM replicator.rate_budget WHERE key = %s", (key,)).fetchone()
    assert debt is not None
    assert debt[0] < -2.5  # ... that later takes pay off
    row = conn.execute("SELECT key FROM replicator.rate_budget").fetchall()
    assert all(len(k) == 16 for (k,) in row)  # a fingerprint, never a token


def test_a_penalty_blocks_the_budget_until_retry_after_then_grants_one(conn: Conn) -> None:
    key = _key()
    rate_budget.ensure(conn, key, rate=5.0, burst=5.0)
    rate_budget.penalize(conn, key, 2.0)
    answer = rate_budget.take(conn, key)
    assert answer is not None
    assert not answer.granted
    assert answer.wait_s == pytest.approx(2.0, abs=0.1)  # the Retry-After, though the burst was saved up
    conn.execute(
        "UPDATE replicator.rate_budget SET blocked_until = blocked_until - interval '2.5 seconds', "
        "refilled_at = refilled_at - interval '2.5 seconds' WHERE key = %s",
        (key,),
    )  # the block ended half a second ago
    assert _grants(conn, key) == 3  # one token at its end, then 0.5 s at 5/s: not the burst saved up before


def test_the_budget_row_is_made_again_if_it_disappears(db_url: str, conn: Conn) -> None:
    key = _key()
    budget = SharedBudget(db_url, key, 50.0)
    try:
        assert budget.acquire() == 0.0
        conn.execute("DELETE FROM replicator.rate_budget WHERE key = %s", (key,))
        assert budget.acquire() == 0.0
        assert conn.execute("SELECT count(*) FROM replicator.rate_budget WHERE key = %s", (key,)).fetchone() == (1,)
    finally:
        budget.close()


# ---- limiters on separate connections -----------------------------------------------------------------------------


def test_limiters_on_separate_connections_share_one_budget_and_never_over_grant(db_url: str) -> None:
    key = _key()
    rate, burst, per_thread, threads = 20.0, 5.0, 12, 4
    limiters = [SharedBudget(db_url, key, rate, burst) for _ in range(2)]  # two "processes", two connections
    granted: list[float] = []
    lock = threading.Lock()

    def draw(limiter: SharedBudget) -> None:
        for _ in range(per_thread):
            limiter.acquire()
            with lock:
                granted.append(time.monotonic())

    started = time.monotonic()
    elapsed = _in_threads(draw, [limiters[i % 2] for i in range(threads)], timeout_s=60)
    for limiter in limiters:
        limiter.close()
    total = per_thread * threads
    print(f"\n{total} tokens at {rate}/s, burst {burst}, 2 connections × 2 threads: {elapsed:.2f} s")
    assert len(granted) == total
    assert elapsed >= (total - burst) / rate - 0.05
    # At no moment more than burst + rate × elapsed granted (a little slack for the clock read after each grant).
    granted.sort()
    for n, at in enumerate(granted, start=1):
        assert n <= burst + rate * (at - started) + 1, f"grant {n} at {at - started:.3f} s is over the budget"
    assert all(limiter.fallbacks == 0 for limiter in limiters)


def test_a_429_seen_by_one_limiter_makes_the_other_wait_it_out(db_url: str) -> None:
    key = _key()
    one, other = SharedBudget(db_url, key, 50.0), SharedBudget(db_url, key, 50.0)
    try:
        assert other.acquire() == 0.0
        one.penalize(1.5)  # one "process" got 429 with Retry-After: 1.5
        started = time.monotonic()
        waited = other.acquire()
        assert time.monotonic() - started >= 1.4
        assert waited >= 1.4
        assert other.acquire() == pytest.approx(0.0, abs=0.1)  # then the rate again
    finally:
        one.close()
        other.close()


# ---- Postgres away ------------------------------------------------------------------------------------------------


def test_without_postgres_the_limiter_falls_back_to_a_local_share_and_logs_it_once() -> None:
    unreachable = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    budget = SharedBudget(unreachable, _key(), 8.0, fallback_share=4.0, connect_timeout_s=1.0)
    started = time.monotonic()
    for _ in range(6):
        budget.acquire()  # the sink goes on: a local bucket at 8 / 4 = 2 per second, burst 2
    elapsed = time.monotonic() - started
    assert budget.fallbacks == 1  # one outage, one log line, however many calls
    assert budget.fallback.rate == 2.0
    assert elapsed >= (6 - 2) / 2.0 - 0.05


def test_after_a_lost_connection_the_limiter_falls_back_then_returns_to_postgres(db_url: str, conn: Conn) -> None:
    key = _key()
    budget = SharedBudget(db_url, key, 100.0, retry_postgres_s=0.3)
    try:
        budget.acquire()
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        budget.acquire()  # the connection is gone: served by the fallback
        assert budget.fallbacks == 1
        time.sleep(0.4)
        before = conn.execute("SELECT refilled_at FROM replicator.rate_budget WHERE key = %s", (key,)).fetchone()
        budget.acquire()  # Postgres again
        after = conn.execute("SELECT refilled_at FROM replicator.rate_budget WHERE key = %s", (key,)).fetchone()
        assert before is not None
        assert after is not None
        assert after[0] > before[0]
        assert budget.fallbacks == 1
    finally:
        budget.close()


# ---- wiring -------------------------------------------------------------------------------------------------------


def test_the_notion_budget_is_shared_by_default_one_per_process_and_local_on_request(db_url: str) -> None:
    base = {"POSTGRES_URL": db_url, "NOTION_API_KEY": "ntn_emulator_token", "NOTION_RATE_PER_S": 7}
    shared = Settings.model_validate(base)
    assert shared.notion_budget == "shared"
    stop = threading.Event()
    limiter = notion_limiter(shared, stop=stop)
    assert isinstance(limiter, SharedBudget)
    assert limiter.rate == 7.0
    assert limiter.key == fingerprint("ntn_emulator_token")
    assert notion_limiter(shared, stop=stop) is limiter  # the workers and the narrative capture share one
    assert sink_limiter("pinecone", shared) is None
    local = notion_limiter(Settings.model_validate({**base, "NOTION_BUDGET": "local"}))
    assert isinstance(local, TokenBucket)
    assert notion_limiter(Settings.model_validate({"POSTGRES_URL": db_url})) is None  # no token, no Notion calls
    metrics = Metrics()
    metered = notion_limiter(shared, metrics, stop=stop)
    assert metered is not None
    limiter.penalize(0.3)
    metered.acquire()
    waited = metrics.registry.get_sample_value("replicator_sink_budget_wait_seconds_total", {"sink": "notion"})
    assert waited is not None
    assert waited >= 0.2


# ---- two Notion replicas, one token, the emulator's rate limit ----------------------------------------------------

ENTITY_SETTING = {
    "program": "NOTION_PROGRAMS_DB_ID",
    "experiment": "NOTION_EXPERIMENTS_DB_ID",
    "signature": "NOTION_SIGNATURE_DB_ID",
    "dataset": "NOTION_EXP_DATA_DB_ID",
}


class CountingLimiter:
    """Counts the 429s a replica's sink saw (each one penalizes the limiter once)."""

    def __init__(self, inner: RateLimiter) -> None:
        self.inner = inner
        self.rate_limited = 0

    def acquire(self, tokens: float = 1.0) -> float:
        return self.inner.acquire(tokens)

    def charge(self, tokens: float) -> None:
        self.inner.charge(tokens)

    def penalize(self, retry_after_s: float) -> None:
        self.rate_limited += 1
        self.inner.penalize(retry_after_s)


@pytest.fixture
def notion_settings(notion_emulator: NotionEmulator, db_url: str) -> Settings:
    client = notion_client(notion_emulator.token, notion_emulator.url)
    try:
        ids = create_databases(client, notion_emulator.root_page_id)
    finally:
        client.close()
    return Settings.model_validate(
        {
            "POSTGRES_URL": db_url,
            "REPLICATOR_SINKS": "notion",
            "NOTION_API_KEY": notion_emulator.token,
            "NOTION_BASE_URL": notion_emulator.url,
            "NOTION_RATE_PER_S": RATE,
            "NOTION_SETTLE_MS": 0,
            "REPLICATOR_MAX_ATTEMPTS": 50,
            "REPLICATOR_WORKER_BATCH": 2,  # small claims, so every worker thread has rows to write
            **ids,
        }
    )


RATE = 10.0  # the emulator's limit for the token, and NOTION_RATE_PER_S (the integration's total)
PROGRAMS = 24
WORKERS = 3  # worker threads per replica (REPLICATOR_WORKERS_PER_SINK), on the replica's one sink


def _replicate(settings: Settings, conn: Conn, limiters: list[CountingLimiter], label: str) -> tuple[int, float]:
    """Two replicas (a sink and ``WORKERS`` worker threads each, one token) write ``PROGRAMS`` new programs to
    Notion. Returns the 429s they saw and the seconds it took."""
    for n in range(PROGRAMS):
        row = conn.execute("INSERT INTO program (name) VALUES (%s) RETURNING id", (f"{label} {n}",)).fetchone()
        assert row is not None
        conn.execute("INSERT INTO replicator.outbox (sink, entity, entity_id) VALUES ('notion', 'program', %s)", row)
    failures: list[BaseException] = []

    sinks = [build_sink("notion", settings, limiter=limiter) for limiter in limiters]

    def replica(index: int) -> None:
        sink = sinks[index // WORKERS]
        worker = SinkWorker(
            settings.dsn,
            sink,
            settings=settings,
            metrics=Metrics(),
            worker_id=f"{label}-{index}",
            policy=BackoffPolicy(base_s=0.2, cap_s=2.0),
        )
        deadline = time.monotonic() + 120
        try:
            with psycopg.connect(settings.dsn, autocommit=True) as own:
                while time.monotonic() < deadline:
                    left = own.execute("SELECT count(*) FROM replicator.outbox WHERE sink = 'notion'").fetchone()
                    if left == (0,):
                        return
                    if not worker.run_once():
                        time.sleep(0.05)
        except BaseException as error:
            failures.append(error)
        finally:
            worker.close()

    elapsed = _in_threads(replica, list(range(2 * WORKERS)), timeout_s=180)
    for sink in sinks:
        sink.close()
    assert not failures
    left = conn.execute("SELECT count(*) FROM replicator.outbox WHERE sink = 'notion'").fetchone()
    dead = conn.execute("SELECT count(*) FROM replicator.dead_letter").fetchone()
    assert (left, dead) == ((0,), (0,)), f"{label}: outbox {left}, dead letters {dead}"
    return sum(limiter.rate_limited for limiter in limiters), elapsed


def test_two_replicas_with_one_token_see_far_fewer_429s_with_the_shared_budget(
    notion_emulator: NotionEmulator, notion_settings: Settings, db_url: str, conn: Conn
) -> None:
    key = fingerprint(notion_emulator.token)
    # Each replica alone at the full rate: together twice what Notion allows (the old per-process bucket).
    notion_emulator.set_rate_limit(RATE, 10)
    local = [CountingLimiter(TokenBucket(RATE)) for _ in range(2)]
    local_429, local_s = _replicate(notion_settings, conn, local, "local")
    # The shared budget: two limiters on their own connections, as two processes have.
    notion_emulator.set_rate_limit(RATE, 10)
    budgets = [SharedBudget(db_url, key, RATE) for _ in range(2)]
    shared = [CountingLimiter(budget) for budget in budgets]
    try:
        shared_429, shared_s = _replicate(notion_settings, conn, shared, "shared")
    finally:
        for budget in budgets:
            budget.close()
    print(
        f"\n2 replicas × {WORKERS} workers, {PROGRAMS} programs each run, emulator and NOTION_RATE_PER_S at {RATE}/s: "
        f"local buckets {local_429} × 429 in {local_s:.1f} s; shared budget {shared_429} × 429 in {shared_s:.1f} s"
    )
    assert local_429 >= 3  # the storm the shared budget is for
    assert shared_429 <= max(2, local_429 // 4)
    pages = [p for p in notion_emulator.state()["pages"].values() if p["data_source_id"] and not p["in_trash"]]
    assert len(pages) == 2 * PROGRAMS  # every program once
