"""``replicator rollout status``: the stage the deployment is in, as the team planned the rollout (a pilot, then all
pipelines, then Notion read-only, then a final validation), in one view.

- **Scope**: which documents each sink carries (``REPLICATOR_SCOPE_*``, replicator/scope.py): the configured scope,
  the one the sink applied last (``replicator.sink_scope``; they differ until the daemon restarts), what the last
  re-scope enqueued and how much of it is still pending, and how many documents per entity are in scope.
- **Dual write**: ``ENABLE_DUAL_WRITE`` (false: no writes to Notion; capture goes on, Notion stays the notebook).
- **Capture**: ``NARRATIVE_CAPTURE`` (people's notes read back into Postgres).
- **Counts** per entity: rows in Postgres, documents each sink holds as its workers recorded them
  (``replicator.sink_state``), narratives captured; ``verify`` is what checks the sinks themselves, and its last
  result per sink is shown with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from replicator.config import Settings
from replicator.graph import ENTITIES
from replicator.scope import members
from replicator.store import narrative, scopes


@dataclass(frozen=True)
class RolloutStatus:
    stage: str
    scope: str
    dual_write: bool
    capture: bool
    sinks: tuple[str, ...]  # enabled sinks
    counts: dict[str, dict[str, int]]  # entity -> {"postgres", "notion", "pinecone", "narrative", ...}
    verify: dict[str, dict[str, Any]]  # sink -> the last verify result
    overwrites: int
    # sink -> configured / applied scope, narrow choice, the last re-scope, documents in scope per entity
    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "scope": self.scope,
            "scopes": self.scopes,
            "dual_write": self.dual_write,
            "capture": self.capture,
            "sinks": list(self.sinks),
            "counts": self.counts,
            "last_verify": self.verify,
            "edited_in_notion_overwritten": self.overwrites,
        }


def stage_of(settings: Settings) -> str:
    """A name for the stage the switches describe."""
    notion_configured = "notion" in settings.configured_sinks
    if notion_configured and settings.enable_dual_write:
        return "dual write (Postgres -> Notion and Pinecone)" + (
            ", narrative capture on" if settings.narrative_capture else ""
        )
    if settings.narrative_capture:
        return "Notion read-only (no Notion writes; people's notes still captured into Postgres)"
    if notion_configured:
        return "Notion writes off (ENABLE_DUAL_WRITE=false), narrative capture off"
    return "Postgres -> " + (", ".join(settings.enabled_sinks) or "no sink")


def collect(conn: psycopg.Connection[Any], settings: Settings) -> RolloutStatus:
    counts: dict[str, dict[str, int]] = {}
    for entity in ENTITIES:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", entity))).fetchone()
        counts[entity] = {"postgres": int(row[0]) if row else 0}
    synced = narrative.synced_counts(conn)
    for sink in dict.fromkeys((*settings.configured_sinks, *synced)):
        for entity in ENTITIES:
            counts[entity][sink] = synced.get(sink, {}).get(entity, 0)
    captured = narrative.counts(conn)
    for entity in ENTITIES:
        counts[entity]["narrative"] = captured.get(entity, 0)
    verify = {
        r.sink: {
            "checked_at": r.checked_at.isoformat() if isinstance(r.checked_at, datetime) else str(r.checked_at),
            "in_sync": r.in_sync,
            "documents": r.documents,
            "remote": r.remote,
            "missing": r.missing,
            "orphaned": r.orphaned,
            "stale": r.stale,
            "duplicated": r.duplicated,
        }
        for r in narrative.verify_results(conn)
    }
    sink_scopes = scope_views(conn, settings)
    return RolloutStatus(
        stage=stage_of(settings),
        scope=scope_summary(sink_scopes),
        scopes=sink_scopes,
        dual_write=settings.enable_dual_write,
        capture=settings.narrative_capture,
        sinks=settings.enabled_sinks,
        counts=counts,
        verify=verify,
        overwrites=narrative.overwrite_count(conn),
    )


def scope_views(conn: psycopg.Connection[Any], settings: Settings) -> dict[str, dict[str, Any]]:
    """Per enabled sink: its configured scope, the one it applied last, the last re-scope and documents in scope."""
    applied = scopes.applied(conn)
    out: dict[str, dict[str, Any]] = {}
    for sink in settings.enabled_sinks:
        configured = settings.scope_of(sink)
        last = applied.get(sink)
        inside: dict[str, int] = dict.fromkeys(ENTITIES, 0)
        if not configured.everything:
            for key in members(conn, configured):
                inside[key.entity] += 1
        wanted = (configured.text(), settings.scope_narrow)
        pending_change = (last.scope, last.narrow) != wanted if last is not None else not configured.everything
        out[sink] = {
            "scope": configured.text(),
            "describe": configured.describe(),
            "narrow": settings.scope_narrow,
            "applied": last.scope if last is not None else None,
            "applied_at": last.applied_at.isoformat() if last is not None else None,
            "previous": last.previous_scope if last is not None else None,
            "widened": last.widened if last is not None else 0,
            "narrowed": last.narrowed if last is not None else 0,
            "rescope_pending": last.pending if last is not None else 0,
            # A scope configured but not applied yet: the daemon applies it at its next start.
            "restart_needed": pending_change,
            "in_scope": None if configured.everything else inside,
        }
    return out


def scope_summary(views: dict[str, dict[str, Any]]) -> str:
    """One line: every sink's scope (``all documents`` when none is scoped)."""
    if all(v["scope"] == "all" for v in views.values()):
        return "all documents"
    return "; ".join(f"{sink}: {v['describe']}" for sink, v in views.items())
