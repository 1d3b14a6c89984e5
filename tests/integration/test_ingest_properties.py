"""Property: any table — random, or a good one mutated — either ingests cleanly or raises IngestError, and an
IngestError never leaves a partial write behind (every domain row is compared before and after)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.errors import IngestError
from ingest.pipeline import DatasetOptions, connect, ingest_dataset, prepare_table_dataset
from ingest.scoring import ScoringOptions

Conn = psycopg.Connection[tuple[Any, ...]]
TABLES = ("dataset", "feature", "dataset_feature", "dataset_signature")

GOOD = (
    b"Lipid Species,Intensity,p-value,log2FC\n"
    b"Cer(d18:1/16:0),1000,0.001,1.5\n"
    b"Cer(d18:1/18:0),1500,0.002,2.0\n"
    b"PC(16:0/18:1),900,0.01,-0.5\n"
    b"SM(d18:1/24:1),700,0.2,0.1\n"
)

names = st.sampled_from(
    ["Cer(d18:1/16:0)", "PC 34:1", "PC(16:0/18:1)", "CER 16:0", "hex_cer_24_0", "TP53", "xyz", "", "a,b", "é"]
)
cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-5, 5).map(str),
    st.sampled_from(["", "NA", "nan", "inf", "abc", "0.5", "1e-3", "-", '"q"', "\t"]),
)
headers = st.lists(
    st.sampled_from(["Lipid Species", "species", "log2FC", "p-value", "Intensity", "S1", "S2", "Name", "x"]),
    min_size=1,
    max_size=5,
)


@st.composite
def random_tables(draw: st.DrawFn) -> bytes:
    columns = draw(headers)
    delimiter = draw(st.sampled_from([",", "\t", ";"]))
    rows = draw(
        st.lists(
            st.lists(st.one_of(names, cells), min_size=len(columns), max_size=len(columns) + draw(st.integers(0, 1))),
            max_size=6,
        )
    )
    lines = [delimiter.join(columns), *(delimiter.join(r) for r in rows)]
    return ("\n".join(lines) + "\n").encode()


@st.composite
def mutated_tables(draw: st.DrawFn) -> bytes:
    data = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["delete", "insert", "replace"]))
        byte = draw(st.sampled_from([b",", b"\n", b"\xff", b"x", b"9", b".", b"-", b"\x00", b'"']))
        if action == "delete":
            del data[position]
        elif action == "insert":
            data[position:position] = byte
        else:
            data[position : position + 1] = byte
    return bytes(data)


def _snapshot(conn: Conn) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(map(tuple, conn.execute(f"SELECT * FROM {t}").fetchall()), key=repr) for t in TABLES}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(random_tables(), mutated_tables()))
def test_any_table_ingests_cleanly_or_raises_ingest_error_without_a_partial_write(
    content: bytes, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    before = _snapshot(conn)
    refusal: IngestError | None = None
    try:
        dataset, report = prepare_table_dataset(
            path, DatasetOptions(omics_type="lipidomics", key="property", on_duplicate="error")
        )
        with connect(db_url) as c:
            ingest_dataset(c, dataset, scoring=ScoringOptions())
    except IngestError as error:
        refusal = error
    if refusal is not None:
        assert str(path) in str(refusal)
        assert _snapshot(conn) == before
        return
    linked = conn.execute(
        "SELECT count(*) FROM dataset_feature df JOIN dataset d ON d.id = df.dataset_id "
        "WHERE d.natural_key = 'property'"
    ).fetchone()
    assert linked == (report.features,)
