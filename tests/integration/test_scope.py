"""Per-sink scope (#14, the staged rollout) through the real worker and the real notion-client SDK against the
Notion emulator, on a real Postgres: a lipidomics pilot carries only the lipidomics datasets and the programs,
experiments and signatures they relate to; widening the scope backfills the rest; narrowing it trashes what falls
outside (a page a person wrote on is kept) or, with REPLICATOR_SCOPE_NARROW=keep, keeps it. The re-scope is the
daemon's own start-up step (``apply_scopes``), and what it enqueues goes through the outbox and the worker."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from replicator.cli import app
from replicator.config import Settings
from replicator.daemon import apply_scopes
from replicator.documents import DocumentKey
from replicator.graph import ENTITIES
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy
from replicator.rollout import collect
from replicator.sinks.notion import NotionSink, notion_client
from replicator.status import collect_status
from replicator.store.sink_state import SCOPE_REMOVED_HASH
from replicator.verify import verify_sink
from replicator.worker import SinkWorker
from tests.emulators.notion import PERSON_TOKEN, NotionEmulator
from tests.integration.test_notion_sink import _dataset, _pages, _program, _state_hash, database_ids, sink

__all__ = ["database_ids", "sink"]  # fixtures, imported for this module's tests

Conn = psycopg.Connection[tuple[Any, ...]]
PILOT = "dataset.omics_type=lipidomics"


def _settings(db_url: str, scope: str = "", narrow: str = "remove") -> Settings:
    return Settings.model_validate(
        {
            "POSTGRES_URL": db_url,
            "REPLICATOR_SINKS": "notion",
            "NOTION_SETTLE_MS": 0,
            "REPLICATOR_SCOPE_NOTION": scope,
            "REPLICATOR_SCOPE_NARROW": narrow,
        }
    )


def _start(db_url: str, conn: Conn, sink: NotionSink, settings: Settings) -> list[Any]:
    """What a daemon start does for the scope (the stored scope vs the configured one), then the worker drains."""
    done = apply_scopes(conn, settings)
    _drain(db_url, sink, settings)
    return done


def _drain(db_url: str, sink: NotionSink, settings: Settings) -> None:
    worker = SinkWorker(
        db_url, sink, settings=settings, metrics=Metrics(), worker_id="t", policy=BackoffPolicy(base_s=30.0)
    )
    try:
        for _ in range(20):  # a pass may enqueue neighbours to render again
            if not worker.run_once():
                break
    finally:
        worker.close()


def _enqueue_all(conn: Conn) -> None:
    """As the backfill does: every document, for the notion sink."""
    for entity in ENTITIES:
        conn.execute(
            f"INSERT INTO replicator.outbox (sink, entity, entity_id) SELECT 'notion', %s, id FROM {entity} "
            "ON CONFLICT (sink, entity, entity_id) DO NOTHING",
            (entity,),
        )


@pytest.fixture
def graph(conn: Conn) -> dict[str, DocumentKey]:
    """A lipidomics dataset with its program, experiment and matching signature; a proteomics dataset with its
    own program; a program related to nothing."""
    lip = _dataset(conn, "CSF lipids")
    prot = _dataset(conn, "CSF proteins")
    conn.execute("UPDATE dataset SET omics_type = 'proteomics' WHERE id = %s", (prot.id,))
    p_lip, p_prot, lone = _program(conn, "Lipid program"), _program(conn, "Protein program"), _program(conn, "Lone")
    row = conn.execute("INSERT INTO experiment (name, type) VALUES ('CSF study', 'patient') RETURNING id").fetchone()
    assert row is not None
    exp = DocumentKey("experiment", row[0])
    row = conn.execute("INSERT INTO signature (name, short_id) VALUES ('ALS-CSF', 'ALS1') RETURNING id").fetchone()
    assert row is not None
    sig = DocumentKey("signature", row[0])
    conn.execute("INSERT INTO program_dataset VALUES (%s, %s), (%s, %s)", (p_lip.id, lip.id, p_prot.id, prot.id))
    conn.execute("INSERT INTO program_experiment VALUES (%s, %s)", (p_prot.id, exp.id))
    conn.execute("INSERT INTO experiment_dataset VALUES (%s, %s)", (exp.id, lip.id))
    conn.execute(
        "INSERT INTO dataset_signature (dataset_id, signature_id, score, overlap_fraction, matched_components, "
        "total_components, match_level) VALUES (%s, %s, 0.75, 1.0, 2, 2, 'exact')",
        (lip.id, sig.id),
    )
    return {"lip": lip, "prot": prot, "p_lip": p_lip, "p_prot": p_prot, "lone": lone, "exp": exp, "sig": sig}


def _live(emulator: NotionEmulator) -> set[str]:
    return set(_pages(emulator))


def _ids(graph: dict[str, DocumentKey], *names: str) -> set[str]:
    return {str(graph[n].id) for n in names}


PILOT_DOCS = ("lip", "p_lip", "exp", "sig")
EVERY_DOC = (*PILOT_DOCS, "prot", "p_prot", "lone")


def test_a_pilot_scope_carries_only_lipidomics_and_what_it_relates_to(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn, graph: dict[str, DocumentKey]
) -> None:
    settings = _settings(db_url, PILOT)
    _enqueue_all(conn)
    [first] = _start(db_url, conn, sink, settings)
    assert first.changed
    assert first.previous is None
    assert first.scope == PILOT
    assert _live(notion_emulator) == _ids(graph, *PILOT_DOCS)
    # The experiment's page names the lipidomics dataset only; the program outside the scope is not named.
    experiment = _pages(notion_emulator)[str(graph["exp"].id)]["properties"]
    assert experiment["Related Programs"] == []
    assert experiment["Related Datasets"] == [_pages(notion_emulator)[str(graph["lip"].id)]["id"]]
    assert _state_hash(conn, graph["prot"]) is None  # never written, nothing held

    # verify compares the sink with the documents in its scope, as the scoped sink carries them.
    report = verify_sink(conn, sink, scope=settings.scope_of("notion"))
    assert report.in_sync, report
    assert report.documents == 4
    assert not verify_sink(conn, sink).in_sync  # against every document: the others are missing

    # A second start with the same scope changes nothing.
    [again] = apply_scopes(conn, settings)
    assert not again.changed

    rollout = collect(conn, settings)
    assert rollout.scopes["notion"]["scope"] == PILOT
    assert rollout.scopes["notion"]["in_scope"] == {"program": 1, "experiment": 1, "signature": 1, "dataset": 1}
    assert "lipidomics" in rollout.scope
    [view] = [s for s in collect_status(conn, settings).sinks if s.name == "notion"]
    assert view.scope == PILOT
    assert view.scope_applied == PILOT


def test_widening_the_scope_backfills_what_newly_falls_inside(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn, graph: dict[str, DocumentKey]
) -> None:
    _enqueue_all(conn)
    _start(db_url, conn, sink, _settings(db_url, PILOT))
    assert _live(notion_emulator) == _ids(graph, *PILOT_DOCS)

    [widened] = _start(db_url, conn, sink, _settings(db_url, ""))
    assert widened.changed
    assert widened.previous == PILOT
    assert widened.scope == "all"
    assert widened.widened == 3
    assert widened.narrowed == 0
    assert _live(notion_emulator) == _ids(graph, *EVERY_DOC)
    # The documents already carried are rendered again with their relations to the newcomers.
    experiment = _pages(notion_emulator)[str(graph["exp"].id)]["properties"]
    assert experiment["Related Programs"] == [_pages(notion_emulator)[str(graph["p_prot"].id)]["id"]]
    assert verify_sink(conn, sink).in_sync


def test_narrowing_trashes_what_falls_outside_but_keeps_a_page_a_person_wrote_on(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn, graph: dict[str, DocumentKey]
) -> None:
    _enqueue_all(conn)
    _start(db_url, conn, sink, _settings(db_url))
    assert _live(notion_emulator) == _ids(graph, *EVERY_DOC)
    person = notion_client(PERSON_TOKEN, notion_emulator.url)
    noted = _pages(notion_emulator)[str(graph["p_prot"].id)]["id"]
    try:
        person.blocks.children.append(
            noted,
            children=[{"type": "paragraph", "paragraph": {"rich_text": [{"text": {"content": "ask the core"}}]}}],
        )
    finally:
        person.close()

    [narrowed] = _start(db_url, conn, sink, _settings(db_url, PILOT))
    assert narrowed.narrowed == 3
    assert narrowed.widened == 0
    # The proteomics dataset and the lone program are trashed; the program a person wrote on stays live.
    assert _live(notion_emulator) == _ids(graph, *PILOT_DOCS, "p_prot")
    assert _ids(graph, "prot", "lone") <= set(_pages(notion_emulator, trashed=True))
    for name in ("prot", "lone", "p_prot"):
        state = _state_hash(conn, graph[name])
        assert state is not None
        assert state[1] == SCOPE_REMOVED_HASH
    experiment = _pages(notion_emulator)[str(graph["exp"].id)]["properties"]
    assert experiment["Related Programs"] == []
    rollout = collect(conn, _settings(db_url, PILOT))
    assert rollout.counts["dataset"]["notion"] == 1
    assert rollout.counts["program"]["notion"] == 1
    # The page kept for its people is listed outside the scope, not as an orphan: a narrowed pilot verifies clean.
    kept = verify_sink(conn, sink, scope=_settings(db_url, PILOT).scope_of("notion"))
    assert kept.in_sync, kept.as_json()
    assert kept.outside_scope == (graph["p_prot"],)
    assert kept.orphaned == ()

    # Widened again: the trashed pages come back from the trash (the same pages), nothing is duplicated.
    trashed_page = _pages(notion_emulator, trashed=True)[str(graph["prot"].id)]["id"]
    _start(db_url, conn, sink, _settings(db_url))
    assert _live(notion_emulator) == _ids(graph, *EVERY_DOC)
    assert _pages(notion_emulator)[str(graph["prot"].id)]["id"] == trashed_page


def test_narrowing_with_keep_leaves_what_falls_outside(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn, graph: dict[str, DocumentKey]
) -> None:
    _enqueue_all(conn)
    _start(db_url, conn, sink, _settings(db_url))
    held = {n: _state_hash(conn, graph[n]) for n in ("prot", "p_prot", "lone")}

    [narrowed] = _start(db_url, conn, sink, _settings(db_url, PILOT, narrow="keep"))
    assert narrowed.changed
    assert narrowed.narrow == "keep"
    assert _live(notion_emulator) == _ids(graph, *EVERY_DOC)
    assert {n: _state_hash(conn, graph[n]) for n in held} == held
    report = verify_sink(conn, sink, scope=_settings(db_url, PILOT).scope_of("notion"))
    assert report.in_sync, report.as_json()
    assert set(report.outside_scope) == {graph[n] for n in held}
    # A kept document whose row is then deleted is an orphan again, whatever the scope.
    conn.execute("DELETE FROM public.program WHERE id = %s", (graph["lone"].id,))
    gone = verify_sink(conn, sink, scope=_settings(db_url, PILOT).scope_of("notion"))
    assert gone.orphaned == (graph["lone"],)
    assert set(gone.outside_scope) == {graph["prot"], graph["p_prot"]}


def test_status_and_rollout_status_show_the_scope(
    sink: NotionSink,
    notion_emulator: NotionEmulator,
    database_ids: dict[str, str],
    db_url: str,
    conn: Conn,
    graph: dict[str, DocumentKey],
) -> None:
    _enqueue_all(conn)
    _start(db_url, conn, sink, _settings(db_url, PILOT))
    env = {
        "POSTGRES_URL": db_url,
        "NOTION_API_KEY": notion_emulator.token,
        "NOTION_BASE_URL": notion_emulator.url,
        "NOTION_PROGRAMS_DB_ID": database_ids["program"],
        "NOTION_EXPERIMENTS_DB_ID": database_ids["experiment"],
        "NOTION_SIGNATURE_DB_ID": database_ids["signature"],
        "NOTION_EXP_DATA_DB_ID": database_ids["dataset"],
        "REPLICATOR_SINKS": "notion",
        "REPLICATOR_SCOPE_NOTION": PILOT,
        "COLUMNS": "220",
    }
    runner = CliRunner()
    rollout = runner.invoke(app, ["rollout", "status", "--json"], env=env)
    assert rollout.exit_code == 0, rollout.output
    shown = json.loads(rollout.stdout)
    assert shown["scopes"]["notion"]["scope"] == PILOT
    assert shown["scopes"]["notion"]["applied"] == PILOT
    assert shown["scopes"]["notion"]["restart_needed"] is False
    assert shown["counts"]["dataset"] == {"postgres": 2, "notion": 1, "narrative": 0}

    # Configured wider than applied: both commands say a restart applies it.
    widened = {**env, "REPLICATOR_SCOPE_NOTION": ""}
    text = runner.invoke(app, ["rollout", "status"], env=widened)
    assert text.exit_code == 0, text.output
    assert "changed: applied at the daemon's next start" in text.stdout
    status = runner.invoke(app, ["status"], env=widened)
    assert f"applied: {PILOT}; restart to apply" in status.stdout
