"""The daemon never goes down for one broken part (#11), on the real server: a sink unreachable at start-up or
whose databases vanish while running (the other sink syncs, the slot advances, the sink comes back by itself),
Postgres restarted under the stream (no exit, nothing lost), health that names what is wrong when no process runs
or Postgres is gone, and a start-up order that creates the slot before anything slow.

Each test prints what it observed (seconds to resume, slot lag bytes during the fault): run with ``pytest -s``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator.config import Settings
from replicator.documents import DocumentKey
from replicator.metrics import Metrics
from replicator.sinks.notion.client import create_databases, notion_client
from replicator.status import collect_status, evaluate_health
from schema.migrate import upgrade
from tests.conftest import REPO_ROOT
from tests.daemon_harness import InProcessDaemon, daemon_settings, slot_of, wait_for
from tests.emulators.notion import NotionEmulator
from tests.pgcluster import PgCluster, free_port
from tests.support.recording_sink import load_recording, recording_plugin

Conn = psycopg.Connection[tuple[Any, ...]]


def settings_for(db_url: str, recording: Path, sinks: str = "recording", **extra: Any) -> Settings:
    plugin = recording_plugin(recording, fail_file=extra.pop("fail_file", None))
    fast = {
        "REPLICATOR_RETRY_BASE_S": 0.05,
        "REPLICATOR_RETRY_MAX_S": 1,
        "REPLICATOR_SINK_RECHECK_MIN_S": 0.5,
        "REPLICATOR_SINK_RECHECK_MAX_S": 2,
        "NOTION_SETTLE_MS": 0,
    }
    return daemon_settings(db_url, recording, sinks, **{**plugin, **fast, **extra})


def notion_settings(emulator: NotionEmulator, ids: dict[str, str]) -> dict[str, Any]:
    return {"NOTION_API_KEY": emulator.token, "NOTION_BASE_URL": emulator.url, "NOTION_RATE_PER_S": 50, **ids}


def new_dataset(conn: Conn, key: str) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type) VALUES (%s, %s, 'lipidomics') RETURNING id", (key, key)
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def confirmed_lsn(conn: Conn) -> int | None:
    row = conn.execute(
        "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s AND active",
        (slot_of(conn),),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _past(conn: Conn, lsn: int) -> bool:
    return (confirmed_lsn(conn) or 0) > lsn


def slot_lag_bytes(conn: Conn) -> int:
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (slot_of(conn),),
    ).fetchone()
    assert row is not None
    return int(row[0])


def synced(conn: Conn, sink: str) -> int:
    row = conn.execute("SELECT count(*) FROM replicator.sink_state WHERE sink = %s", (sink,)).fetchone()
    assert row is not None
    return int(row[0])


def pending(conn: Conn, sink: str) -> int:
    row = conn.execute("SELECT count(*) FROM replicator.outbox WHERE sink = %s", (sink,)).fetchone()
    assert row is not None
    return int(row[0])


def dead_letters(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM replicator.dead_letter").fetchone()
    assert row is not None
    return int(row[0])


def sink_view(conn: Conn, settings: Settings, name: str) -> Any:
    return next(s for s in collect_status(conn, settings).sinks if s.name == name)


# ---- sinks ---------------------------------------------------------------------------------------------------------


def test_notion_unreachable_at_start_waits_in_the_outbox_while_the_other_sink_syncs_and_resumes_by_itself(
    conn: Conn, db_url: str, tmp_path: Path, notion_emulator: NotionEmulator
) -> None:
    ids = create_databases(notion_client(notion_emulator.token, notion_emulator.url), notion_emulator.root_page_id)
    port = int(notion_emulator.url.rsplit(":", 1)[1])
    recording = tmp_path / "rec.jsonl"
    settings = settings_for(db_url, recording, sinks="notion,recording", **notion_settings(notion_emulator, ids))
    notion_emulator.stop()  # Notion is unreachable (connection refused) from before the daemon starts
    before = new_dataset(conn, "before")
    with InProcessDaemon(settings) as daemon:
        wait_for(lambda: DocumentKey("dataset", before) in load_recording(recording).documents, what="recording sync")
        first = wait_for(lambda: confirmed_lsn(conn), what="slot streamed")
        during = new_dataset(conn, "during")
        wait_for(lambda: DocumentKey("dataset", during) in load_recording(recording).documents, what="second sync")
        wait_for(lambda: (confirmed_lsn(conn) or 0) > first, what="slot advanced while notion is down")
        lag_during = slot_lag_bytes(conn)
        notion = wait_for(lambda: (v := sink_view(conn, settings, "notion")).up is False and v, what="notion down")
        assert "notion" in (notion.down_reason or "")
        assert notion.fix is None  # unreachable is not an operator's configuration problem
        assert pending(conn, "notion") == 2
        assert synced(conn, "notion") == 0
        assert dead_letters(conn) == 0
        assert daemon.thread.is_alive()
        restarted = time.monotonic()
        notion_emulator.start(port=port)
        wait_for(lambda: synced(conn, "notion") == 2, timeout=60, what="notion caught up")
        resumed_s = time.monotonic() - restarted
        wait_for(lambda: sink_view(conn, settings, "notion").up is True, what="notion up in status")
    assert pending(conn, "notion") == 0
    assert dead_letters(conn) == 0
    print(
        f"\n[resilience] notion unreachable at start: slot lag during the fault {lag_during} bytes; "
        f"notion synced {resumed_s:.2f} s after it came back"
    )


def test_a_sink_that_goes_down_while_running_spends_no_attempts_while_down_and_resumes_when_it_answers(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    recording = tmp_path / "rec.jsonl"
    fail_file = tmp_path / "fail"
    # Two attempts would dead-letter a row at its second failure: a sink that is down must not spend them.
    settings = settings_for(db_url, recording, fail_file=fail_file, REPLICATOR_MAX_ATTEMPTS=2)
    metrics = Metrics()
    with InProcessDaemon(settings, metrics) as daemon:
        first = new_dataset(conn, "first")
        wait_for(lambda: DocumentKey("dataset", first) in load_recording(recording).documents, what="synced")
        fail_file.write_text("down")  # the service stops answering, its health check included
        went_down = time.monotonic()
        during = [new_dataset(conn, f"during{i}") for i in range(3)]
        wait_for(lambda: metrics.sink_up.labels(sink="recording")._value.get() == 0, what="marked down")
        lsn = wait_for(lambda: confirmed_lsn(conn), what="slot active")
        time.sleep(4.0)  # several re-checks
        assert (confirmed_lsn(conn) or 0) > lsn  # the slot kept advancing (heartbeats)
        lag_during = slot_lag_bytes(conn)
        assert pending(conn, "recording") == 3
        assert dead_letters(conn) == 0
        checks = metrics.sink_checks.labels(sink="recording", result="down")._value.get()
        assert checks >= 2
        fail_file.unlink()
        back = time.monotonic()
        wait_for(lambda: pending(conn, "recording") == 0, timeout=30, what="caught up")
        resumed_s = time.monotonic() - back
        assert {DocumentKey("dataset", d) for d in during} <= set(load_recording(recording).documents)
        assert daemon.thread.is_alive()
    assert dead_letters(conn) == 0
    print(
        f"\n[resilience] sink down while running for {back - went_down:.1f} s: {checks:.0f} failed re-checks, "
        f"no row dead-lettered (REPLICATOR_MAX_ATTEMPTS=2), slot lag {lag_during} bytes; caught up "
        f"{resumed_s:.2f} s after it answered"
    )


@pytest.mark.slow
def test_notion_rate_limited_at_start_is_down_not_fatal_and_syncs_once_the_429s_stop(
    conn: Conn, db_url: str, tmp_path: Path, notion_emulator: NotionEmulator
) -> None:
    ids = create_databases(notion_client(notion_emulator.token, notion_emulator.url), notion_emulator.root_page_id)
    recording = tmp_path / "rec.jsonl"
    settings = settings_for(db_url, recording, sinks="notion,recording", **notion_settings(notion_emulator, ids))
    dataset = new_dataset(conn, "busy")
    # The next twelve requests answer 429 with Retry-After: 1 (another replica is using the integration's budget).
    notion_emulator.set_faults({"schedule": ["429"] * 12, "retry_after_s": 1.0})
    started = time.monotonic()
    with InProcessDaemon(settings) as daemon:
        wait_for(lambda: DocumentKey("dataset", dataset) in load_recording(recording).documents, what="other sink")
        recording_s = time.monotonic() - started
        assert confirmed_lsn(conn) is not None
        wait_for(lambda: synced(conn, "notion") == 1, timeout=90, what="notion synced after the 429s")
        notion_s = time.monotonic() - started
        assert daemon.thread.is_alive()
    assert daemon.code == 0
    assert dead_letters(conn) == 0
    print(
        f"\n[resilience] notion rate limited (12 x 429) at start: the other sink synced {recording_s:.2f} s after "
        f"start, notion {notion_s:.2f} s after start"
    )


_EMULATOR_STORES = ("databases", "data_sources", "pages", "blocks", "children", "page_versions")


def test_notion_databases_vanishing_while_running_mark_notion_down_for_an_operator_and_nothing_is_dead_lettered(
    conn: Conn, db_url: str, tmp_path: Path, notion_emulator: NotionEmulator
) -> None:
    ids = create_databases(notion_client(notion_emulator.token, notion_emulator.url), notion_emulator.root_page_id)
    recording = tmp_path / "rec.jsonl"
    settings = settings_for(db_url, recording, sinks="notion,recording", **notion_settings(notion_emulator, ids))
    metrics = Metrics()
    first = new_dataset(conn, "first")
    with InProcessDaemon(settings, metrics) as daemon:
        wait_for(lambda: synced(conn, "notion") == 1, what="notion synced")
        # The workspace comes back empty: every database (and page) is gone.
        with notion_emulator.lock:
            saved = {name: getattr(notion_emulator, name) for name in _EMULATOR_STORES}
        notion_emulator.reset()
        vanished = time.monotonic()
        second = new_dataset(conn, "second")
        conn.execute("UPDATE dataset SET name = 'first, renamed' WHERE id = %s", (first,))
        wait_for(lambda: DocumentKey("dataset", second) in load_recording(recording).documents, what="other sink")
        notion = wait_for(
            lambda: (v := sink_view(conn, settings, "notion")).up is False and v.fix and v, what="notion down"
        )
        down_after_s = time.monotonic() - vanished
        assert "replicator notion init" in notion.fix
        verdict = evaluate_health(collect_status(conn, settings), settings)
        assert not verdict.ok
        assert any(r.startswith("sink_misconfigured:") and "replicator notion init" in r for r in verdict.reasons)
        assert metrics.sink_config_error.labels(sink="notion")._value.get() == 1
        assert metrics.sink_up.labels(sink="notion")._value.get() == 0
        lsn = wait_for(lambda: confirmed_lsn(conn), what="slot active")
        conn.execute("UPDATE dataset SET name = 'second, renamed' WHERE id = %s", (second,))
        wait_for(lambda: (confirmed_lsn(conn) or 0) > lsn, what="slot advanced while notion is down")
        lag_during = slot_lag_bytes(conn)
        assert pending(conn, "notion") == 2
        assert dead_letters(conn) == 0
        assert daemon.thread.is_alive()
        # An operator restores the databases (from the Notion trash): the sink comes back by itself.
        restored = time.monotonic()
        with notion_emulator.lock:
            for name, store in saved.items():
                setattr(notion_emulator, name, store)
        wait_for(lambda: pending(conn, "notion") == 0, timeout=60, what="notion caught up")
        resumed_s = time.monotonic() - restored
        assert synced(conn, "notion") == 2
        assert metrics.sink_config_error.labels(sink="notion")._value.get() == 0
    assert dead_letters(conn) == 0
    assert daemon.code == 0
    print(
        f"\n[resilience] notion databases vanished: marked down {down_after_s:.2f} s later; slot lag during the "
        f"fault {lag_during} bytes; notion synced {resumed_s:.2f} s after the databases were restored"
    )


# ---- Postgres restarts -----------------------------------------------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of this test's own (it is restarted under the daemon; the session's server must not be). Not
    under pytest's tmp_path: a pytest session starting meanwhile resets that folder to mode 0700, and the server
    runs as another user when we are root."""
    folder = Path(tempfile.mkdtemp(prefix="omics-cdc-resil-"))
    cluster = PgCluster(folder / "data", free_port())
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _migrated_db(cluster: PgCluster, name: str) -> str:
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = cluster.url_for(name)
    upgrade(url)
    return url


class _Writer(threading.Thread):
    """Inserts datasets one transaction at a time, through restarts; remembers the ones whose commit returned."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.committed: list[uuid.UUID] = []
        self.failed = 0

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as c:
                    while not self.stop.is_set():
                        n += 1
                        self.committed.append(new_dataset(c, f"w{n}"))
                        time.sleep(0.02)
            except psycopg.Error:
                self.failed += 1
                time.sleep(0.1)


@pytest.mark.slow
def test_two_immediate_postgres_restarts_while_streaming_lose_nothing_and_the_daemon_never_exits(
    own_cluster: PgCluster, tmp_path: Path
) -> None:
    url = _migrated_db(own_cluster, "resil_restart")
    recording = tmp_path / "rec.jsonl"
    settings = settings_for(url, recording)
    writer = _Writer(url)
    resumes: list[float] = []
    lags: list[int] = []
    with InProcessDaemon(settings) as daemon:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_for(lambda: confirmed_lsn(conn), what="slot streamed")
        writer.start()
        wait_for(lambda: len(writer.committed) > 20, what="writes")
        for _ in range(2):
            time.sleep(1.0)
            own_cluster.restart("immediate")
            restarted = time.monotonic()
            with psycopg.connect(url, autocommit=True) as conn:
                # Streaming again: the slot is active and its confirmed LSN moves on from where it restarted.
                after = wait_for(lambda: confirmed_lsn(conn), timeout=90, what="slot active after the restart")
                lags.append(slot_lag_bytes(conn))
                wait_for(functools.partial(_past, conn, after), timeout=90, what="slot advancing again")
                resumes.append(time.monotonic() - restarted)
            assert daemon.thread.is_alive()
            assert daemon.code is None
        time.sleep(1.0)
        writer.stop.set()
        writer.join(10)
        expected = {DocumentKey("dataset", i) for i in writer.committed}
        try:
            wait_for(lambda: expected <= set(load_recording(recording).documents), timeout=90, what="all applied")
        except AssertionError:
            missing = expected - set(load_recording(recording).documents)
            with psycopg.connect(url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT entity_id, claimed_by, claimed_until, next_attempt_at, attempts, last_error "
                    "FROM replicator.outbox WHERE entity_id = ANY(%s)",
                    ([k.id for k in missing],),
                ).fetchall()
            raise AssertionError(f"{len(missing)} commit(s) not applied; their outbox rows: {rows}") from None
        assert daemon.thread.is_alive()
    assert daemon.code == 0
    print(
        f"\n[resilience] two pg_ctl restart -m immediate: streaming again {', '.join(f'{s:.2f}' for s in resumes)} s "
        f"after each restart; slot lag right after it {', '.join(map(str, lags))} bytes; {len(expected)} commits "
        f"written ({writer.failed} writer reconnects), all applied"
    )


# ---- health that cannot lie ------------------------------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATOR_", "POSTGRES_"))}
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        env={**base, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_health_with_no_replicator_running_is_unhealthy_naming_the_stale_checkpoint_and_the_inactive_slot(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    recording = tmp_path / "rec.jsonl"
    settings = settings_for(db_url, recording, REPLICATOR_HEALTH_MAX_CHECKPOINT_AGE_S=2)
    env = {
        "POSTGRES_URL": db_url,
        "REPLICATOR_SLOT": slot_of(db_url),
        "REPLICATOR_SINKS": "recording",
        "REPLICATOR_HEALTH_MAX_CHECKPOINT_AGE_S": "2",
        "REPLICATOR_HEARTBEAT_INTERVAL_S": "0.5",
        **recording_plugin(recording),
    }
    with InProcessDaemon(settings):
        wait_for(lambda: confirmed_lsn(conn), what="slot streamed")
        time.sleep(1.0)  # a few heartbeats
        running = _cli(env, "health", "--json")
        assert running.returncode == 0, running.stdout + running.stderr
    stopped = time.monotonic()
    verdict = wait_for(
        lambda: (r := _cli(env, "health", "--json")).returncode == 3 and "checkpoint_stale" in r.stdout and r,
        timeout=30,
        what="unhealthy with no process",
    )
    unhealthy_after_s = time.monotonic() - stopped
    answer = json.loads(verdict.stdout)
    assert answer["ok"] is False
    assert {"checkpoint_stale", "slot_inactive"} <= set(answer["rules"])
    assert all(reason.split(":", 1)[0] in answer["rules"] for reason in answer["reasons"])
    text = _cli(env, "health")
    assert text.returncode == 3
    assert "checkpoint_stale" in text.stdout
    print(
        f"\n[resilience] health with no process: unhealthy ({', '.join(answer['rules'])}) {unhealthy_after_s:.2f} s "
        "after the daemon stopped (REPLICATOR_HEALTH_MAX_CHECKPOINT_AGE_S=2)"
    )


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except urllib.error.URLError:
        return 0, {}  # not listening yet


@pytest.mark.slow
def test_readyz_and_healthz_say_not_ready_with_postgres_down_and_the_daemon_comes_back_by_itself(
    own_cluster: PgCluster, tmp_path: Path
) -> None:
    url = _migrated_db(own_cluster, "resil_ready")
    port = free_port()
    settings = settings_for(url, tmp_path / "rec.jsonl", REPLICATOR_HTTP_ADDR=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    with InProcessDaemon(settings) as daemon:
        wait_for(lambda: _get(base + "/readyz")[0] == 200, what="ready while streaming")
        assert _get(base + "/healthz")[0] == 200
        own_cluster.stop()
        stopped = time.monotonic()
        code, body = wait_for(lambda: (r := _get(base + "/readyz"))[0] == 503 and r, what="not ready")
        not_ready_s = time.monotonic() - stopped
        assert "postgres_unreachable" in body["rules"]
        assert body["ready"] is False
        code, health = _get(base + "/healthz")
        assert (code, health["rules"]) == (503, ["postgres_unreachable"])
        assert _get(base + "/livez")[0] == 200  # a restart would not bring Postgres back
        time.sleep(3.0)
        assert daemon.thread.is_alive()
        own_cluster.start()
        started = time.monotonic()
        wait_for(lambda: _get(base + "/readyz")[0] == 200, timeout=90, what="ready again")
        ready_again_s = time.monotonic() - started
        with psycopg.connect(url, autocommit=True) as conn:
            wait_for(lambda: confirmed_lsn(conn), what="streaming again")
    assert daemon.code == 0
    print(
        f"\n[resilience] Postgres stopped: /readyz 503 ({', '.join(body['rules'])}) {not_ready_s:.2f} s later; "
        f"ready again {ready_again_s:.2f} s after Postgres came back"
    )


# ---- start-up order --------------------------------------------------------------------------------------------------


def _slot_exists(conn: Conn) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot_of(conn),)).fetchone()
    return bool(row and row[0])


def _first_event(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> float | None:
    """Wait for the process's first log line (its own code runs: imports are done); None if it died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_bytes().strip():
            return time.monotonic()
        if proc.poll() is not None:
            return None
        time.sleep(0.01)
    raise AssertionError("the replicator logged nothing within 30 s")


@pytest.mark.slow
def test_a_start_up_kill_storm_leaves_the_slot_after_the_first_run_that_lives_a_second(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    """The sink takes 8 s to build (a heavy embedding model): the slot must not wait for it."""
    import random
    import signal

    recording = tmp_path / "rec.jsonl"
    before = new_dataset(conn, "before the storm")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REPLICATOR_", "POSTGRES_"))},
        "POSTGRES_URL": db_url,
        "REPLICATOR_SLOT": slot_of(db_url),
        "REPLICATOR_SINKS": "recording",
        **recording_plugin(recording, build_delay_ms=8000),
        "REPLICATOR_HTTP_ADDR": "127.0.0.1:0",
        "REPLICATOR_LOG_FORMAT": "json",
    }
    rng = random.Random(11)

    def one_run(n: int, *, after_start: float | None, after_first_event: float | None) -> tuple[bool, float | None]:
        log = tmp_path / f"run{n}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "replicator", "run"], env=env, cwd=REPO_ROOT, stdout=out,
                                    stderr=out)  # fmt: skip
            spawned = time.monotonic()
            first: float | None = None
            try:
                if after_start is not None:
                    time.sleep(after_start)
                else:
                    first = _first_event(log, proc)
                    time.sleep(after_first_event or 0.0)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
        return _slot_exists(conn), (first - spawned) if first is not None else None

    storm: list[tuple[str, bool]] = []
    for n in range(6):
        if n % 2 == 0:  # killed while still importing
            lived = rng.uniform(0.1, 0.6)
            exists, _ = one_run(n, after_start=lived, after_first_event=None)
            storm.append((f"{lived:.2f}s after spawn", exists))
        else:  # killed just after its first event, well under a second into its own code
            lived = rng.uniform(0.0, 0.3)
            exists, _ = one_run(n, after_start=None, after_first_event=lived)
            storm.append((f"{lived:.2f}s after its first event", exists))
    exists, import_s = one_run(99, after_start=None, after_first_event=1.0)
    assert exists, "a run that lived a second after its first event did not leave the slot"
    first_left = next((f"run {i + 1} (killed {w})" for i, (w, e) in enumerate(storm) if e), "none of them")
    # And nothing is lost to the storm: a normal run backfills and streams what the storm's runs left.
    with InProcessDaemon(settings_for(db_url, recording)):
        wait_for(lambda: DocumentKey("dataset", before) in load_recording(recording).documents, what="backfill")
        after = new_dataset(conn, "after the storm")
        wait_for(lambda: DocumentKey("dataset", after) in load_recording(recording).documents, what="streamed")
    print(
        f"\n[resilience] kill storm: {len(storm)} runs killed ({'; '.join(w for w, _ in storm)}); the first to "
        f"leave the slot: {first_left}; the run killed 1 s after its first event ({import_s:.2f} s after spawn) "
        "left it, with its sink still building (8 s)"
    )


# ---- commands on a database that is not migrated or not there --------------------------------------------------

_COMMANDS = (
    ("status",),
    ("status", "--json"),
    ("health",),
    ("health", "--json"),
    ("resync",),
    ("dlq", "list"),
    ("dlq", "retry"),
    ("dlq", "purge", "--yes"),
    ("slot", "drop", "--yes"),
    ("verify", "--sink", "recording"),
    ("run",),
)


def _commands_env(url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "POSTGRES_URL": url,
        "REPLICATOR_SLOT": "resil_cli",
        "REPLICATOR_SINKS": "recording",
        **recording_plugin(tmp_path / "rec.jsonl"),
        "REPLICATOR_HTTP_ADDR": "127.0.0.1:0",
        "REPLICATOR_LOG_FORMAT": "json",
    }


@pytest.mark.slow
def test_every_command_on_an_unmigrated_database_says_so_and_exits_non_zero_without_a_traceback(
    empty_db_url: str, tmp_path: Path
) -> None:
    env = _commands_env(empty_db_url, tmp_path)
    for args in _COMMANDS:
        result = _cli(env, *args)
        output = result.stdout + result.stderr
        assert "Traceback" not in output, (args, output)
        assert "not migrated" in output, (args, output)
        expected = 3 if args[0] == "health" else 1
        assert result.returncode == expected, (args, result.returncode, output)
    health = json.loads(_cli(env, "health", "--json").stdout)
    assert health["rules"] == ["not_migrated"]


@pytest.mark.slow
def test_every_command_on_an_unreachable_database_says_so_and_exits_non_zero_without_a_traceback(
    tmp_path: Path,
) -> None:
    env = _commands_env(f"postgresql://u:hunter2@127.0.0.1:{free_port()}/nowhere", tmp_path)
    for args in _COMMANDS[:-1]:  # `run` waits for Postgres instead (tested with the readiness probe)
        result = _cli(env, *args)
        output = result.stdout + result.stderr
        assert "Traceback" not in output, (args, output)
        assert "hunter2" not in output, (args, output)
        assert "cannot" in output, (args, output)
        expected = 3 if args[0] in ("health", "verify") else 1
        assert result.returncode == expected, (args, result.returncode, output)
