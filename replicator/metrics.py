"""Prometheus metrics of one replicator process, on its own registry (no global state: the daemon creates one
``Metrics`` and passes it to the source, the outbox writer and every sink worker; ``/metrics`` serves it).

The dashboard (``docker/grafana/omics-cdc-replicator.json``) and the alert rules
(``docker/prometheus/omics-cdc-alerts.yaml``) read these names; ``tests/unit/test_observability_files.py`` fails
when one of them names a metric this module does not export.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from replicator.sinks.pinecone.embedding import EmbeddingProvider

# pg_replication_slots.wal_status values (https://www.postgresql.org/docs/current/view-pg-replication-slots.html),
# plus "missing" for a slot that does not exist.
WAL_STATUSES = ("reserved", "extended", "unreserved", "lost", "missing")

# Seconds per embedding call: a local model takes tens of milliseconds to seconds per batch, an HTTP provider more.
_EMBED_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.changes_read = Counter(
            "replicator_changes_read", "Row changes read from the wal2json stream", ["table"], registry=r
        )
        self.batches = Counter("replicator_batches", "Outbox batches committed by the source", registry=r)
        self.source_incidents = Counter(
            "replicator_source_incidents",
            "Times the source stopped on a change it cannot take (kind: unparseable_change); never skipped",
            ["kind"],
            registry=r,
        )
        self.documents_enqueued = Counter(
            "replicator_documents_enqueued", "Dirty documents written to the outbox", ["sink"], registry=r
        )
        self.outbox_pending = Gauge("replicator_outbox_pending", "Outbox rows waiting per sink", ["sink"], registry=r)
        self.oldest_pending_seconds = Gauge(
            "replicator_outbox_oldest_pending_seconds", "Age of the oldest pending outbox row", ["sink"], registry=r
        )
        self.dead_letter_rows = Gauge(
            "replicator_dead_letter_rows", "Rows in replicator.dead_letter per sink", ["sink"], registry=r
        )
        self.lag_bytes = Gauge(
            "replicator_slot_lag_bytes", "pg_current_wal_lsn() minus the slot's confirmed_flush_lsn", registry=r
        )
        self.lag_seconds = Gauge(
            "replicator_lag_seconds", "Age of the newest heartbeat seen back through the stream", registry=r
        )
        self.slot_wal_status = Gauge(
            "replicator_slot_wal_status",
            "1 for the slot's current pg_replication_slots.wal_status (missing: no slot), 0 for the others",
            ["wal_status"],
            registry=r,
        )
        self.slot_safe_wal_size = Gauge(
            "replicator_slot_safe_wal_size_bytes",
            "WAL that can still be written before the slot risks losing what it needs (set only when "
            "max_slot_wal_keep_size limits it)",
            registry=r,
        )
        self.confirmed_lsn = Gauge("replicator_confirmed_lsn", "LSN last confirmed to the server", registry=r)
        self.is_leader = Gauge("replicator_is_leader", "1 while this process streams the slot", registry=r)
        self.sink_calls = Counter(
            "replicator_sink_calls", "Documents applied by sinks, by outcome", ["sink", "outcome"], registry=r
        )
        self.sink_requests = Counter(
            "replicator_sink_requests",
            "API requests sinks made (a Notion document costs one to four), as the sinks report them",
            ["sink"],
            registry=r,
        )
        self.sink_up = Gauge(
            "replicator_sink_up",
            "1 while the sink answers its checks in this process, 0 while it is down (its rows wait in the outbox)",
            ["sink"],
            registry=r,
        )
        self.sink_config_error = Gauge(
            "replicator_sink_config_error",
            "1 while the sink is down for a configuration an operator must fix (see `replicator status`)",
            ["sink"],
            registry=r,
        )
        self.sink_checks = Counter(
            "replicator_sink_checks",
            "Sink checks and the failures that marked a sink down, by result (up, down, config_error)",
            ["sink", "result"],
            registry=r,
        )
        self.sink_retries = Counter("replicator_sink_retries", "Retried sink operations", ["sink"], registry=r)
        self.sink_budget_wait_seconds = Counter(
            "replicator_sink_budget_wait_seconds",
            "Seconds API calls waited for the sink's rate budget (Notion: shared by every process with the token)",
            ["sink"],
            registry=r,
        )
        self.dead_letters = Counter("replicator_dead_letters", "Outbox rows dead-lettered", ["sink"], registry=r)
        self.duplicates_found = Counter(
            "replicator_duplicates_found",
            "Extra downstream copies of one document a sink found (duplicate Notion pages), trashed or reported",
            ["sink"],
            registry=r,
        )
        self.schema_waits = Counter(
            "replicator_schema_waits",
            "Documents put back to wait because the downstream schema lacks a property the sink writes",
            ["sink"],
            registry=r,
        )
        self.leases_lost = Counter(
            "replicator_leases_lost",
            "Claimed outbox rows a worker lost before it finished them (another worker took them after the lease "
            "ran out unrenewed); the losing worker writes them no more",
            ["sink"],
            registry=r,
        )
        self.skipped_unchanged = Counter(
            "replicator_skipped_unchanged", "Documents whose content hash had not changed", ["sink"], registry=r
        )
        self.out_of_scope = Counter(
            "replicator_out_of_scope",
            "Documents a worker found outside its sink's scope (#14), by action: removed downstream, kept "
            "(REPLICATOR_SCOPE_NARROW=keep) or not written (the sink never held them)",
            ["sink", "action"],
            registry=r,
        )
        self.rescoped_documents = Counter(
            "replicator_rescoped_documents",
            "Documents a changed sink scope enqueued at start-up, by direction: widened (newly inside) or narrowed "
            "(held, now outside)",
            ["sink", "direction"],
            registry=r,
        )
        self.apply_seconds = Histogram(
            "replicator_sink_apply_seconds", "Time to apply one claimed batch", ["sink"], registry=r
        )
        self.embedded_texts = Counter(
            "replicator_embedded_texts", "Chunk texts embedded, by provider", ["provider"], registry=r
        )
        self.embed_seconds = Histogram(
            "replicator_embed_seconds",
            "Time per embedding call, by provider",
            ["provider"],
            buckets=_EMBED_BUCKETS,
            registry=r,
        )

        self.narrative_pages = Counter(
            "replicator_narrative_pages",
            "Notion pages whose people's blocks the narrative capture read, by outcome (changed, unchanged, deleted)",
            ["outcome"],
            registry=r,
        )
        self.narrative_requests = Counter(
            "replicator_narrative_requests", "Notion API requests made by the narrative capture", registry=r
        )
        self.narrative_pending = Gauge(
            "replicator_narrative_pending_pages",
            "Edited Notion pages the narrative capture has not read yet",
            registry=r,
        )
        self.narrative_oldest_pending_seconds = Gauge(
            "replicator_narrative_oldest_pending_seconds",
            "Age of the oldest Notion edit the narrative capture has not read yet",
            registry=r,
        )
        self.property_overwrites = Counter(
            "replicator_property_overwrites",
            "Replicator-owned Notion properties a person changed and Postgres overwrote, by entity",
            ["entity"],
            registry=r,
        )

    def set_wal_status(self, wal_status: str | None) -> None:
        """Mark the slot's ``wal_status`` (None: the slot does not exist) as the one current state."""
        current = wal_status or "missing"
        for state in {*WAL_STATUSES, current}:
            self.slot_wal_status.labels(wal_status=state).set(1 if state == current else 0)


class MeteredProvider:
    """An embedding provider that counts the texts it embeds and times each call into ``metrics``; otherwise the
    wrapped provider unchanged (the Pinecone sink gets one from the sink factory)."""

    def __init__(
        self, inner: EmbeddingProvider, metrics: Metrics, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self._texts = metrics.embedded_texts.labels(provider=inner.name)
        self._seconds = metrics.embed_seconds.labels(provider=inner.name)
        self._clock = clock

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        started = self._clock()
        vectors = self.inner.embed(texts, query=query)
        self._seconds.observe(max(self._clock() - started, 0.0))
        self._texts.inc(len(texts))
        return vectors

    def close(self) -> None:
        self.inner.close()


def metered(provider: EmbeddingProvider, metrics: Metrics | None) -> EmbeddingProvider:
    """``provider`` counted into ``metrics``, or unchanged when there are none."""
    return provider if metrics is None else MeteredProvider(provider, metrics)
