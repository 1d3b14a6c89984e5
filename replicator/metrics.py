"""Prometheus metrics of one replicator process, on its own registry (no global state: the daemon creates one
``Metrics`` and passes it to the source, the outbox writer and every sink worker; ``/metrics`` serves it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.changes_read = Counter(
            "replicator_changes_read", "Row changes read from the wal2json stream", ["table"], registry=r
        )
        self.batches = Counter("replicator_batches", "Outbox batches committed by the source", registry=r)
        self.documents_enqueued = Counter(
            "replicator_documents_enqueued", "Dirty documents written to the outbox", ["sink"], registry=r
        )
        self.outbox_pending = Gauge("replicator_outbox_pending", "Outbox rows waiting per sink", ["sink"], registry=r)
        self.oldest_pending_seconds = Gauge(
            "replicator_outbox_oldest_pending_seconds", "Age of the oldest pending outbox row", ["sink"], registry=r
        )
        self.lag_bytes = Gauge(
            "replicator_slot_lag_bytes", "pg_current_wal_lsn() minus the slot's confirmed_flush_lsn", registry=r
        )
        self.lag_seconds = Gauge(
            "replicator_lag_seconds", "Age of the newest heartbeat seen back through the stream", registry=r
        )
        self.confirmed_lsn = Gauge("replicator_confirmed_lsn", "LSN last confirmed to the server", registry=r)
        self.is_leader = Gauge("replicator_is_leader", "1 while this process streams the slot", registry=r)
        self.sink_calls = Counter(
            "replicator_sink_calls", "Documents applied by sinks, by outcome", ["sink", "outcome"], registry=r
        )
        self.sink_retries = Counter("replicator_sink_retries", "Retried sink operations", ["sink"], registry=r)
        self.dead_letters = Counter("replicator_dead_letters", "Outbox rows dead-lettered", ["sink"], registry=r)
        self.skipped_unchanged = Counter(
            "replicator_skipped_unchanged", "Documents whose content hash had not changed", ["sink"], registry=r
        )
        self.apply_seconds = Histogram(
            "replicator_sink_apply_seconds", "Time to apply one claimed batch", ["sink"], registry=r
        )
