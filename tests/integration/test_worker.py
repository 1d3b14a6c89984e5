"""The sink worker against a real database: claiming, skipping unchanged documents, version-guarded completion,
retries, dead letters, deletions, concurrent workers and NOTIFY wake-ups. Sinks are test doubles (a sink is ours
to fake; Postgres never is)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator.config import Settings
from replicator.documents import DocumentKey
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy
from replicator.sinks.base import DeleteItem, Outcome, OutcomeKind, RemoteState, Sink, SinkError, UpsertItem
from replicator.worker import SinkWorker
from tests.daemon_harness import wait_for
from tests.support.recording_sink import RecordingSink, load_recording

Conn = psycopg.Connection[tuple[Any, ...]]
SINK = "recording"


def _settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"POSTGRES_URL": db_url, "REPLICATOR_SINKS": SINK}
    values.update(overrides)
    return Settings.model_validate(values)


def _dataset(conn: Conn, name: str = "d") -> DocumentKey:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type) VALUES (%s, %s, 'lipidomics') RETURNING id",
        (f"key-{uuid.uuid4()}", name),
    ).fetchone()
    assert row is not None
    return DocumentKey("dataset", row[0])


def _enqueue(conn: Conn, key: DocumentKey, sink: str = SINK) -> None:
    """The source's coalescing upsert, as the outbox writer does it."""
    conn.execute(
        "INSERT INTO replicator.outbox AS o (sink, entity, entity_id) VALUES (%s, %s, %s) "
        "ON CONFLICT (sink, entity, entity_id) DO UPDATE SET version = o.version + 1, last_enqueued_at = now()",
        (sink, key.entity, key.id),
    )


def _outbox(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT entity_id, version, attempts, claimed_by, next_attempt_at > now(), last_error FROM replicator.outbox"
    ).fetchall()


def _make_due(conn: Conn) -> None:
    conn.execute("UPDATE replicator.outbox SET next_attempt_at = now()")


def _worker(db_url: str, sink: Sink, settings: Settings | None = None, worker_id: str = "w1") -> SinkWorker:
    return SinkWorker(
        db_url,
        sink,
        settings=settings or _settings(db_url),
        metrics=Metrics(),
        worker_id=worker_id,
        policy=BackoffPolicy(base_s=30.0, cap_s=60.0),
    )


def _sample(worker: SinkWorker, name: str, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


class FlakySink(Sink):
    """Fails on a schedule: each entry of ``plan`` is used by one call ("ok", "retryable", "permanent",
    "deferred"); then it succeeds. Records every item it was asked to apply."""

    def __init__(self, plan: Sequence[str] = (), *, retry_after: float | None = None) -> None:
        self.name = SINK
        self.plan = list(plan)
        self.retry_after = retry_after
        self.upserted: list[DocumentKey] = []
        self.deleted: list[DocumentKey] = []

    def _next(self) -> str:
        return self.plan.pop(0) if self.plan else "ok"

    def _outcome(self, key: DocumentKey, mode: str, ok: Outcome) -> Outcome:
        if mode == "retryable":
            error = SinkError("503 from api (Bearer ntn_abcdefghijklmnopqrstuv)", retryable=True, retry_after=None)
            return Outcome(key, OutcomeKind.FAILED, error=error)
        if mode == "permanent":
            error = SinkError("400 validation failed, token ntn_abcdefghijklmnopqrstuv", retryable=False)
            return Outcome(key, OutcomeKind.FAILED, error=error)
        if mode == "deferred":
            return Outcome(key, OutcomeKind.DEFERRED, error=SinkError("relation targets missing", retryable=True))
        return ok

    def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
        mode = self._next()
        out = []
        for item in items:
            key = item.document.key
            if mode == "ok":
                self.upserted.append(key)
            state = RemoteState(remote_id=f"page-{key.id}", content_hash="ignored", chunk_count=2)
            out.append(self._outcome(key, mode, Outcome(key, OutcomeKind.APPLIED, state=state)))
        return out

    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        mode = self._next()
        out = []
        for item in items:
            if mode == "ok":
                self.deleted.append(item.key)
            out.append(self._outcome(item.key, mode, Outcome(item.key, OutcomeKind.DELETED)))
        return out


def test_a_coalesced_row_is_applied_once_and_leaves_sink_state(conn: Conn, db_url: str, tmp_path: Path) -> None:
    key = _dataset(conn)
    for _ in range(5):
        _enqueue(conn, key)
    sink = RecordingSink(tmp_path / "rec.jsonl")
    worker = _worker(db_url, sink)
    assert worker.run_once() == 1
    worker.close()
    state = load_recording(tmp_path / "rec.jsonl")
    assert state.applications == {key: 1}
    assert _outbox(conn) == []
    row = conn.execute("SELECT content_hash, remote_id FROM replicator.sink_state").fetchone()
    assert row is not None
    assert row[0] == state.documents[key].content_hash
    assert row[1] == f"rec:{key}"
    assert conn.execute("SELECT last_success_at IS NOT NULL FROM replicator.sink_status").fetchone() == (True,)


def test_an_unchanged_document_is_skipped_without_a_sink_call(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)
    sink = RecordingSink()
    worker = _worker(db_url, sink)
    worker.run_once()
    _enqueue(conn, key)  # e.g. a replay after a crash, or a change that renders the same
    assert worker.run_once() == 1
    assert [op for op, *_ in sink.log] == ["upsert"]
    assert _sample(worker, "replicator_skipped_unchanged_total", sink=SINK) == 1
    assert _outbox(conn) == []
    conn.execute("UPDATE dataset SET name = 'renamed' WHERE id = %s", (key.id,))
    _enqueue(conn, key)
    worker.run_once()
    worker.close()
    assert [op for op, *_ in sink.log] == ["upsert", "upsert"]


def test_a_change_arriving_during_apply_keeps_the_row(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)

    class ChangingSink(RecordingSink):
        def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
            with psycopg.connect(db_url, autocommit=True) as other:
                other.execute("UPDATE dataset SET name = 'newer' WHERE id = %s", (key.id,))
                _enqueue(other, key)
            return super().upsert(items)

    worker = _worker(db_url, ChangingSink())
    worker.run_once()
    ((_, version, attempts, claimed_by, _, _),) = _outbox(conn)
    assert (version, attempts, claimed_by) == (2, 0, None)
    plain = RecordingSink()
    worker.sink = plain
    worker.run_once()
    worker.close()
    assert _outbox(conn) == []
    assert [(op, k) for op, k, _ in plain.log] == [("upsert", key)]


def test_a_retryable_failure_backs_off_then_succeeds(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)
    sink = FlakySink(["retryable"])
    worker = _worker(db_url, sink)
    assert worker.run_once() == 1
    ((_, _, attempts, claimed_by, in_future, error),) = _outbox(conn)
    assert (attempts, claimed_by, in_future) == (1, None, True)
    assert "503" in error
    assert "ntn_abcdefghijklmnopqrstuv" not in error
    assert worker.run_once() == 0  # not due yet
    _make_due(conn)
    assert worker.run_once() == 1
    worker.close()
    assert sink.upserted == [key]
    assert _outbox(conn) == []
    assert conn.execute("SELECT chunk_count, remote_id FROM replicator.sink_state").fetchone() == (2, f"page-{key.id}")


def test_a_retry_after_hint_is_honoured(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)

    class Limited(FlakySink):
        def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
            error = SinkError("429", retryable=True, retry_after=600.0)
            return [Outcome(i.document.key, OutcomeKind.FAILED, error=error) for i in items]

    worker = SinkWorker(
        db_url,
        Limited(),
        settings=_settings(db_url),
        metrics=Metrics(),
        worker_id="w1",
        policy=BackoffPolicy(base_s=0.01, cap_s=0.02),
    )
    worker.run_once()
    worker.close()
    row = conn.execute("SELECT next_attempt_at - now() > interval '9 minutes' FROM replicator.outbox").fetchone()
    assert row == (True,)


def test_a_permanent_failure_is_dead_lettered_with_a_redacted_error(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    other = _dataset(conn, "fine")
    _enqueue(conn, key)
    sink = FlakySink(["permanent"])
    worker = _worker(db_url, sink)
    worker.run_once()
    _enqueue(conn, other)
    worker.run_once()
    worker.close()
    assert _outbox(conn) == []
    dead = conn.execute("SELECT entity_id, permanent, attempts, error FROM replicator.dead_letter").fetchall()
    assert [(d[0], d[1], d[2]) for d in dead] == [(key.id, True, 1)]
    assert "400 validation failed" in dead[0][3]
    assert "ntn_abcdefghijklmnopqrstuv" not in dead[0][3]
    assert sink.upserted == [other]  # the rest goes on
    assert _sample(worker, "replicator_dead_letters_total", sink=SINK) == 1
    status = conn.execute("SELECT last_error FROM replicator.sink_status").fetchone()
    assert status is not None
    assert "400" in status[0]


def test_a_dead_letter_is_resolved_when_a_later_change_of_its_document_is_applied(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)
    worker = _worker(db_url, FlakySink(["permanent", "ok"]))
    worker.run_once()
    assert conn.execute("SELECT count(*) FROM replicator.dead_letter").fetchone() == (1,)
    conn.execute("UPDATE dataset SET description = 'fixed' WHERE id = %s", (key.id,))
    _enqueue(conn, key)
    worker.run_once()
    worker.close()
    assert _outbox(conn) == []
    assert conn.execute("SELECT count(*) FROM replicator.dead_letter").fetchone() == (0,)


def test_exhausted_attempts_are_dead_lettered(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)
    worker = _worker(db_url, FlakySink(["retryable"] * 10), _settings(db_url, REPLICATOR_MAX_ATTEMPTS=3))
    for _ in range(3):
        _make_due(conn)
        worker.run_once()
    worker.close()
    assert _outbox(conn) == []
    row = conn.execute("SELECT permanent, attempts, error FROM replicator.dead_letter").fetchone()
    assert row is not None
    assert row[:2] == (False, 3)
    assert "gave up after 3 attempts" in row[2]


def test_a_deleted_row_is_deleted_downstream_and_forgotten(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)
    sink = FlakySink()
    worker = _worker(db_url, sink)
    worker.run_once()
    assert conn.execute("SELECT count(*) FROM replicator.sink_state").fetchone() == (1,)
    conn.execute("DELETE FROM dataset WHERE id = %s", (key.id,))
    _enqueue(conn, key)
    worker.run_once()
    worker.close()
    assert sink.deleted == [key]
    assert conn.execute("SELECT count(*) FROM replicator.sink_state").fetchone() == (0,)
    assert _outbox(conn) == []


def test_a_deferred_document_waits_without_spending_attempts_and_is_bounded(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)
    worker = _worker(db_url, FlakySink(["deferred", "deferred"]), _settings(db_url, REPLICATOR_MAX_DEFER_S=60))
    worker.run_once()
    ((_, _, attempts, claimed_by, in_future, error),) = _outbox(conn)
    assert (attempts, claimed_by, in_future) == (0, None, True)
    assert "relation targets missing" in error
    conn.execute("UPDATE replicator.outbox SET next_attempt_at = now(), first_enqueued_at = now() - interval '2 min'")
    worker.run_once()
    worker.close()
    assert _outbox(conn) == []
    row = conn.execute("SELECT permanent, error FROM replicator.dead_letter").fetchone()
    assert row is not None
    assert row[0] is False
    assert "deferred for" in row[1]


def test_a_sink_that_crashes_does_not_kill_the_worker(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)

    class Broken(FlakySink):
        def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
            raise RuntimeError("boom")

    worker = _worker(db_url, Broken())
    worker.run_once()
    worker.close()
    ((_, _, attempts, _, _, error),) = _outbox(conn)
    assert attempts == 1
    assert "RuntimeError: boom" in error


class ConcurrencyProbe(Sink):
    """Notes every key in flight and fails the test's assertion later if two calls ever overlap on one key."""

    def __init__(self) -> None:
        self.name = SINK
        self.lock = threading.Lock()
        self.in_flight: set[DocumentKey] = set()
        self.overlaps: list[DocumentKey] = []
        self.applied: list[DocumentKey] = []

    def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
        keys = [i.document.key for i in items]
        with self.lock:
            self.overlaps.extend(k for k in keys if k in self.in_flight)
            self.in_flight.update(keys)
        time.sleep(0.02)
        with self.lock:
            self.in_flight.difference_update(keys)
            self.applied.extend(keys)
        return [Outcome(k, OutcomeKind.APPLIED, state=RemoteState(None, "", 0)) for k in keys]

    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        return [Outcome(i.key, OutcomeKind.DELETED) for i in items]


def test_two_workers_never_apply_the_same_document_concurrently(conn: Conn, db_url: str) -> None:
    keys = [_dataset(conn, f"d{i}") for i in range(60)]
    for key in keys:
        _enqueue(conn, key)
    probe = ConcurrencyProbe()
    settings = _settings(db_url, REPLICATOR_WORKER_BATCH=4)
    workers = [_worker(db_url, probe, settings, worker_id=f"w{n}") for n in range(3)]
    claimed_by_worker = [0, 0, 0]
    errors: list[BaseException] = []

    def drain(n: int) -> None:
        try:
            while (count := workers[n].run_once()) > 0:
                claimed_by_worker[n] += count
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)
        finally:
            workers[n].close()

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert probe.overlaps == []
    assert sorted(probe.applied) == sorted(keys)  # each exactly once
    assert sum(claimed_by_worker) == len(keys)
    assert _outbox(conn) == []


def test_notify_wakes_an_idle_worker_and_stop_ends_it(conn: Conn, db_url: str) -> None:
    sink = RecordingSink()
    # An idle poll far longer than the wait below: only the NOTIFY can explain a prompt pickup.
    worker = _worker(db_url, sink, _settings(db_url, REPLICATOR_WORKER_IDLE_POLL_S=600))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'replicator-w1' AND query LIKE 'LISTEN%%'"
                ).fetchone()
                != (0,)
            ),
            timeout=15,
            what="the worker listening",
        )
        time.sleep(0.3)  # let it reach its wait
        key = _dataset(conn)
        with conn.transaction():
            _enqueue(conn, key)
            conn.execute("SELECT pg_notify('replicator_outbox', %s)", (SINK,))
        # Far below the 600 s idle poll: only the NOTIFY can explain the pickup.
        wait_for(lambda: [k for _, k, _ in sink.log] == [key], timeout=15, what="the notified row applied")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.parametrize("mode", ["retryable", "permanent"])
def test_the_recording_sink_fails_while_its_fail_file_exists(tmp_path: Path, mode: str) -> None:
    fail_file = tmp_path / "down"
    sink = RecordingSink(tmp_path / "rec.jsonl", fail_file=fail_file)
    from replicator.documents import Document

    doc = Document(key=DocumentKey("dataset", uuid.uuid4()), name="x")
    fail_file.write_text(mode)
    (outcome,) = sink.upsert([UpsertItem(doc, None)])
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.retryable is (mode == "retryable")
    fail_file.unlink()
    (outcome,) = sink.upsert([UpsertItem(doc, None)])
    assert outcome.kind is OutcomeKind.APPLIED
    assert load_recording(tmp_path / "rec.jsonl").applications == {doc.key: 1}


def test_load_recording_replays_deletes_and_ignores_a_torn_tail(tmp_path: Path) -> None:
    from replicator.documents import Document

    path = tmp_path / "rec.jsonl"
    sink = RecordingSink(path)
    a = Document(key=DocumentKey("dataset", uuid.uuid4()), name="a")
    b = Document(key=DocumentKey("signature", uuid.uuid4()), name="b")
    sink.upsert([UpsertItem(a, None), UpsertItem(b, None)])
    sink.upsert([UpsertItem(a, None)])
    sink.delete([DeleteItem(b.key, None)])
    with open(path, "ab") as f:
        f.write(b'{"op":"upsert","key":"dataset:')  # a write cut by kill -9
    state = load_recording(path)
    assert set(state.documents) == {a.key}
    assert state.documents[a.key].content_hash == a.content_hash()
    assert state.applications == {a.key: 2, b.key: 1}
    assert state.deletions == {b.key: 1}


def test_a_crashed_workers_lease_expires_and_its_late_result_is_ignored(conn: Conn, db_url: str) -> None:
    key = _dataset(conn)
    _enqueue(conn, key)
    crashed = _worker(db_url, RecordingSink(), worker_id="crashed")
    (row,) = crashed._claim(crashed._work_conn())  # claimed, then the process "dies" before applying
    survivor_sink = RecordingSink()
    survivor = _worker(db_url, survivor_sink, worker_id="survivor")
    assert survivor.run_once() == 0  # the lease still holds
    conn.execute("UPDATE replicator.outbox SET claimed_until = now() - interval '1 second'")
    _enqueue(conn, key)  # a newer change, so the row must outlive the crashed worker's late completion
    survivor.sink = FlakySink(["deferred"])
    assert survivor.run_once() == 1
    # The crashed worker comes back and tries to complete its stale claim: not its row any more.
    crashed._record(crashed._work_conn(), [row], {key: None}, {key: Outcome(key, OutcomeKind.DELETED)}, [])
    crashed.close()
    survivor.close()
    ((_, version, _, claimed_by, _, _),) = _outbox(conn)
    assert (version, claimed_by) == (2, None)


def test_a_notion_document_is_picked_up_only_once_its_changes_settle(conn: Conn, db_url: str) -> None:
    """NOTION_SETTLE_MS debounces bursts: a row still being changed waits; a settled one, or one whose first change
    is ten settle windows old (a document that never stops changing), is claimed."""
    settings = _settings(db_url, REPLICATOR_SINKS="notion", NOTION_SETTLE_MS=60_000)
    sink = FlakySink()
    sink.name = "notion"
    busy, settled, starving = _dataset(conn, "busy"), _dataset(conn, "settled"), _dataset(conn, "starving")
    for key in (busy, settled, starving):
        _enqueue(conn, key, sink="notion")
    conn.execute(
        "UPDATE replicator.outbox SET last_enqueued_at = now() - interval '61 seconds' WHERE entity_id = %s",
        (settled.id,),
    )
    conn.execute(
        "UPDATE replicator.outbox SET first_enqueued_at = now() - interval '601 seconds' WHERE entity_id = %s",
        (starving.id,),
    )
    worker = _worker(db_url, sink, settings)
    assert worker.run_once() == 2
    worker.close()
    assert sorted(sink.upserted) == sorted([settled, starving])
    assert [row[0] for row in _outbox(conn)] == [busy.id]
