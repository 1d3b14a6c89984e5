"""The narrative capture as a stage of the daemon: ``start_leader_stages`` is called once this process leads and
returns the threads to join at shutdown (they stop when the daemon's worker ``stop`` event is set)."""

from __future__ import annotations

import threading

from replicator.config import Settings
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.retry import backoff_policy
from replicator.sinks.base import SinkConfigError

from .capture import CaptureOptions, NarrativeCapture

log = event_logger("replicator.narrative")


def build_capture(
    settings: Settings, metrics: Metrics | None = None, *, stop: threading.Event | None = None
) -> NarrativeCapture:
    """The capture from settings: the Notion token, base URL and database ids the sink uses, the integration's
    Notion budget (shared with the sink's workers of every process, ``replicator/budget.py``), ``NARRATIVE_*``
    options. Property overwrites go back to the Notion sink only while it is enabled."""
    from replicator.budget import notion_limiter
    from replicator.sinks.notion.client import notion_client
    from replicator.sinks.notion.sink import database_ids

    ids = database_ids(settings)
    missing = [entity for entity, value in ids.items() if not value]
    if settings.notion_api_key is None or missing:
        raise SinkConfigError(
            "narrative capture needs NOTION_API_KEY and the four NOTION_*_DB_ID"
            + (f" (missing: the {', '.join(missing)} database)" if missing else "")
        )
    assert settings.notion_api_key is not None
    return NarrativeCapture(
        settings.dsn,
        notion_client(settings.notion_api_key.get_secret_value(), settings.notion_base_url),
        ids,
        options=CaptureOptions(
            poll_s=settings.narrative_poll_s,
            overlap_s=settings.narrative_overlap_s,
            batch_pages=settings.narrative_batch_pages,
            rewrite_overwrites="notion" in settings.enabled_sinks,
            lock_name=settings.replicator_slot,
        ),
        metrics=metrics,
        bucket=notion_limiter(settings, metrics, stop=stop),
        policy=backoff_policy(settings),
    )


def start_leader_stages(settings: Settings, metrics: Metrics, stop: threading.Event) -> list[threading.Thread]:
    """Start the stages that run in one process only (the leader): today the narrative capture, when
    ``NARRATIVE_CAPTURE`` is on. A capture that cannot be configured is logged and left out; replication goes on."""
    if not settings.narrative_capture:
        return []
    try:
        capture = build_capture(settings, metrics, stop=stop)
    except SinkConfigError as error:
        log.error("narrative.config_error", error=str(error))
        return []

    def run(event: threading.Event) -> None:
        try:
            capture.run(event)
        except Exception as error:  # the capture must never take the source down
            log.error("narrative.crashed", error=f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=run, args=(stop,), name="narrative-capture", daemon=True)
    thread.start()
    return [thread]
