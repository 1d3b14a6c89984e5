"""New features get UUIDv7 ids numbered in key order (migration 0009, ``ingest/writer/features.py``), so bulk
inserts fill the indexes page after page; features already stored keep their ids."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import psycopg

from ingest.pipeline import DatasetOptions, connect, ingest_dataset, prepare_table_dataset
from ingest.scoring import ScoringOptions


def _ingest(url: str, path: Path) -> None:
    dataset, _ = prepare_table_dataset(path, DatasetOptions(omics_type="transcriptomics"))
    with connect(url) as conn:
        ingest_dataset(conn, dataset, scoring=ScoringOptions())


def _ids(url: str) -> dict[str, uuid.UUID]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT normalized_name, id FROM feature").fetchall())


def _table(path: Path, names: list[str]) -> Path:
    rng = random.Random(3)
    path.write_text("gene,log2FC,pvalue\n" + "".join(f"{n},{rng.gauss(0, 1):.4f},0.01\n" for n in names))
    return path


def test_new_features_get_v7_ids_in_name_order_and_old_ones_keep_theirs(tmp_path: Path, db_url: str) -> None:
    first = [f"GENE{i:04d}" for i in range(300)]
    random.Random(1).shuffle(first)  # file order is not key order
    started_ms = int(time.time() * 1000)
    _ingest(db_url, _table(tmp_path / "a.csv", first))
    ids = _ids(db_url)
    assert set(ids) == set(first)
    assert [ids[n] for n in sorted(ids)] == sorted(ids.values())
    assert all(i.version == 7 and i.int >> 80 >= started_ms - 5 for i in ids.values())

    more = [f"GENE{i:04d}" for i in range(150, 450)]  # half known, half new, interleaved in key order
    random.Random(2).shuffle(more)
    _ingest(db_url, _table(tmp_path / "b.csv", more))
    after = _ids(db_url)
    assert {n: after[n] for n in ids} == ids
    new = sorted(set(after) - set(ids))
    assert new == [f"GENE{i:04d}" for i in range(300, 450)]
    assert [after[n] for n in new] == sorted(after[n] for n in new)
    assert min(after[n] for n in new) > max(ids.values())
