"""docs/names.md shows what the normalizers do: every example row is what ``normalize`` gives today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.normalize import FEATURE_TYPES, normalize

DOC = Path(__file__).resolve().parents[2] / "docs" / "names.md"
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _unquote(cell: str) -> str | None:
    cell = cell.strip()
    if cell == "—":
        return None
    assert cell.startswith("`"), cell
    assert cell.endswith("`"), cell
    return cell[1:-1].replace("\\|", "|")


def _rows() -> list[tuple[str, str, str, str | None, bool]]:
    rows, family = [], None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            family = line[4:].strip()
            assert family in FEATURE_TYPES, family
        elif family and line.startswith("| `"):
            cells = _CELL_SPLIT.split(line.strip().strip("|"))
            written, key, species = (_unquote(c) for c in cells[:3])
            assert written is not None
            assert key is not None
            rows.append((family, written, key, species, cells[3].strip() == "yes"))
    return rows


ROWS = _rows()


def test_the_page_has_examples_of_every_family() -> None:
    assert {family for family, *_ in ROWS} == set(FEATURE_TYPES)
    assert len(ROWS) >= 40


@pytest.mark.parametrize(("family", "written", "key", "species", "parsed"), ROWS, ids=[r[1][:40] for r in ROWS])
def test_each_example_is_what_the_normalizer_gives(
    family: str, written: str, key: str, species: str | None, parsed: bool
) -> None:
    feature = normalize(written, family)
    assert (feature.normalized_name, feature.species_name, feature.parsed) == (key, species, parsed)
