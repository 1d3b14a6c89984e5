"""Status and health against a real server: a live slot, a missing one, a lost one, lag and dead-letter
thresholds; and the HTTP endpoints that expose them."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from typing import Any

import orjson
import psycopg
import pytest

from replicator.config import Settings
from replicator.http import serve
from replicator.metrics import Metrics
from replicator.status import Health, collect_status, evaluate_health, refresh_gauges

Conn = psycopg.Connection[tuple[Any, ...]]


def _settings(db_url: str, slot: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"POSTGRES_URL": db_url, "REPLICATOR_SLOT": slot, "REPLICATOR_SINKS": "recording"}
    values.update(overrides)
    return Settings.model_validate(values)


def _slot_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _create_slot(conn: Conn, name: str) -> None:
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (name,))


def _checkpoint(conn: Conn, slot: str, heartbeat_age_s: float | None, transit_s: float = 0.25) -> None:
    """A heartbeat committed ``heartbeat_age_s`` ago that reached the replicator ``transit_s`` after its commit."""
    conn.execute(
        "INSERT INTO replicator.source_checkpoint (slot_name, heartbeat_seen, heartbeat_received_at, leader) "
        "VALUES (%s, now() - make_interval(secs => %s), now() - make_interval(secs => %s), 'host:1')",
        (slot, heartbeat_age_s, None if heartbeat_age_s is None else heartbeat_age_s - transit_s),
    )


def test_a_live_slot_is_reported_with_lag_and_is_healthy(conn: Conn, db_url: str) -> None:
    slot = _slot_name()
    _create_slot(conn, slot)
    _checkpoint(conn, slot, 3.0)
    conn.execute("INSERT INTO program (name) VALUES ('p')")  # WAL after the slot's confirmed position
    settings = _settings(db_url, slot)
    status = collect_status(conn, settings)
    assert status.slot.exists
    assert not status.slot.active
    assert status.slot.confirmed_flush_lsn is not None
    assert status.slot.lag_bytes is not None
    assert status.slot.lag_bytes > 0
    # The last heartbeat (3 s old, within the 5 s interval) took 0.25 s to come back: that is the lag.
    assert status.slot.lag_seconds is not None
    assert status.slot.lag_seconds == pytest.approx(0.25, abs=0.05)
    assert status.slot.wal_status == "reserved"
    assert status.slot.leader == "host:1"
    assert not status.slot.lost
    assert [s.name for s in status.sinks] == ["recording"]
    assert evaluate_health(status, settings) == Health(ok=True, reasons=[], warnings=[])
    as_json = orjson.loads(orjson.dumps(status.to_dict()))
    assert as_json["slot"]["exists"] is True
    assert as_json["slot"]["lost"] is False


def test_a_slot_that_vanished_after_use_is_lost_and_unhealthy(conn: Conn, db_url: str) -> None:
    slot = _slot_name()
    _checkpoint(conn, slot, 1.0)
    settings = _settings(db_url, slot)
    status = collect_status(conn, settings)
    assert not status.slot.exists
    assert status.slot.lost
    health = evaluate_health(status, settings)
    assert not health.ok
    assert "missing although the replicator used it before" in health.reasons[0]


def test_a_slot_never_created_is_unhealthy_too(conn: Conn, db_url: str) -> None:
    settings = _settings(db_url, _slot_name())
    status = collect_status(conn, settings)
    assert not status.slot.exists
    assert not status.slot.lost
    health = evaluate_health(status, settings)
    assert not health.ok
    assert "does not exist yet" in health.reasons[0]


def test_lag_and_dead_letters_over_their_thresholds_are_unhealthy(conn: Conn, db_url: str) -> None:
    slot = _slot_name()
    _create_slot(conn, slot)
    _checkpoint(conn, slot, 500.0)
    conn.execute(
        "INSERT INTO replicator.dead_letter (sink, entity, entity_id, version, lsn, attempts, error, permanent, "
        "first_enqueued_at) VALUES ('recording', 'dataset', gen_random_uuid(), 1, 0, 1, "
        "'401 from postgresql://u:hunter2@db/x', true, now())"
    )
    conn.execute(
        "INSERT INTO replicator.sink_status (sink, enabled, last_error, last_error_at) "
        "VALUES ('recording', true, 'auth failed Bearer ntn_abcdefghijklmnopqrstuvwx', now())"
    )
    conn.execute(
        "INSERT INTO replicator.outbox (sink, entity, entity_id, first_enqueued_at) "
        "VALUES ('recording', 'dataset', gen_random_uuid(), now() - interval '90 seconds')"
    )
    settings = _settings(db_url, slot, REPLICATOR_HEALTH_MAX_LAG_S=60)
    status = collect_status(conn, settings)
    (sink,) = status.sinks
    assert (sink.pending, sink.dead_letters) == (1, 1)
    assert sink.oldest_pending_age_s is not None
    assert sink.oldest_pending_age_s >= 90
    assert sink.last_error is not None
    assert "ntn_abcdefghijklmnopqrstuvwx" not in sink.last_error
    health = evaluate_health(status, settings)
    assert not health.ok
    assert any("REPLICATOR_HEALTH_MAX_LAG_S" in r for r in health.reasons)
    assert any("dead letter" in r for r in health.reasons)
    relaxed = _settings(db_url, slot, REPLICATOR_HEALTH_MAX_LAG_S=3600, REPLICATOR_HEALTH_MAX_DEAD_LETTERS=5)
    assert evaluate_health(status, relaxed).ok
    # The change pending 90 s, with a limit of 60 s: the sink's workers are not getting through.
    stale = _settings(
        db_url,
        slot,
        REPLICATOR_HEALTH_MAX_LAG_S=3600,
        REPLICATOR_HEALTH_MAX_DEAD_LETTERS=5,
        REPLICATOR_HEALTH_MAX_PENDING_AGE_S=60,
    )
    verdict = evaluate_health(status, stale)
    assert verdict.rules == ["backlog_stale"]
    assert "sink recording: the oldest pending change has waited" in verdict.reasons[0]


def test_a_sink_switched_back_on_warns_to_resync(conn: Conn, db_url: str) -> None:
    slot = _slot_name()
    _create_slot(conn, slot)
    conn.execute("INSERT INTO replicator.sink_status (sink, enabled, needs_resync) VALUES ('recording', true, true)")
    settings = _settings(db_url, slot)
    health = evaluate_health(collect_status(conn, settings), settings)
    assert health.ok
    assert health.warnings == ["sink recording was switched back on: run `replicator resync --sink recording`"]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_http_serves_health_readiness_and_refreshed_metrics(conn: Conn, db_url: str) -> None:
    slot = _slot_name()
    _create_slot(conn, slot)
    conn.execute(
        "INSERT INTO replicator.outbox (sink, entity, entity_id) VALUES ('recording', 'dataset', gen_random_uuid())"
    )
    settings = _settings(db_url, slot)
    metrics = Metrics()
    verdict = {"health": Health(ok=True), "ready": False}

    def scrape() -> None:
        with psycopg.connect(db_url, autocommit=True) as c:
            refresh_gauges(collect_status(c, settings), metrics)

    server = serve(
        "127.0.0.1:0",
        metrics,
        lambda: verdict["health"],  # type: ignore[arg-type,return-value]
        lambda: bool(verdict["ready"]),
        on_scrape=scrape,
        live=lambda: bool(verdict["live"]),
    )
    verdict["live"] = True
    try:
        assert server.port > 0
        assert _get(server.url + "/healthz")[0] == 200
        verdict["health"] = Health(ok=False, reasons=["slot lost"])
        code, body = _get(server.url + "/healthz")
        assert (code, orjson.loads(body)["reasons"]) == (503, ["slot lost"])
        # Liveness does not follow health: an unhealthy process is not restarted for it.
        assert _get(server.url + "/livez")[0] == 200
        verdict["live"] = False
        assert _get(server.url + "/livez")[0] == 503
        assert _get(server.url + "/readyz")[0] == 503
        verdict["ready"] = True
        assert _get(server.url + "/readyz")[0] == 200
        code, body = _get(server.url + "/metrics")
        assert code == 200
        assert b'replicator_outbox_pending{sink="recording"} 1.0' in body
        assert b'replicator_slot_wal_status{wal_status="reserved"} 1.0' in body
        assert b'replicator_slot_wal_status{wal_status="lost"} 0.0' in body
        assert b'replicator_dead_letter_rows{sink="recording"} 0.0' in body
        assert _get(server.url + "/nope")[0] == 404
    finally:
        server.shutdown()
