"""Read a Metabolomics Workbench deposit (mwTab text or JSON, parsed by the ``mwtab`` library) into a typed study.

What is kept: study metadata for the dataset row (title, summary, species, institute, methods), the study /
analysis / project ids, and the metabolite data (``MS_METABOLITE_DATA`` or ``NMR_METABOLITE_DATA``): one row per
metabolite line, in file order, with its sample values and the identifiers the ``METABOLITES`` table gives it
(PubChem, KEGG, InChIKey, HMDB, …). Repeated names are kept here as separate rows; merging is the pipeline's job.
Binned NMR data (``NMR_BINNED_DATA``) has no metabolite identities and is refused unless ``allow_bins``.

Cells that are not numbers (``NA``, ``ND``, ``<LOQ``, empty) are counted and treated as missing: public deposits
use many spellings for "not measured", and refusing them would refuse most real files.

**Text and JSON are one deposit.** The Workbench prints a deposit both ways; both must give the same metabolites,
values and identifiers. The metabolite name is read from ``Metabolite`` (the ``mwtab`` library's key for the text
form and for older JSON) or ``metabolite_name`` / ``metabolite name`` (the header of the text form, kept as the key
in newer JSON), in the ``Data`` rows and in the ``Metabolites`` rows alike. Identifiers kept from ``METABOLITES``:
PubChem CID, InChIKey, InChI, SMILES, KEGG, HMDB, ChEBI, LIPID MAPS, RefMet name, and ``other_id`` by its type.

**Ragged data rows are refused** (exit 2, file, line, column), not padded: a row with fewer cells than the
``Samples`` header cannot say *which* samples lack a value (the ``mwtab`` library fills the last ones, so a row
missing its third value silently shifts every later value one sample to the left), and a row with more cells than
the header has values that belong to no sample. A value that was not measured keeps its cell, empty or ``NA``, and
is counted as missing. The same holds for the JSON form: every ``Data`` row must have exactly the samples of the
first one. These checks run on the file's text before the ``mwtab`` library reads it, so a samples header shorter
than the data is reported with both lines instead of the library's ``list index out of range``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mwtab

from ingest.errors import IngestError
from ingest.readers.table import decode_utf8, read_bytes

DATA_SECTIONS = ("MS_METABOLITE_DATA", "NMR_METABOLITE_DATA", "NMR_BINNED_DATA")
_EMPTY = frozenset({"", "-", "na", "n/a", "none", "null"})
_HEADER_FIRST_CELLS = frozenset({"samples", "factors", "metabolite_name", "metabolite name", "bin range(ppm)"})
# Keys that hold the metabolite (or bin) name in a Data or Metabolites row, compared lower-cased.
_NAME_KEYS = frozenset({"metabolite", "metabolite_name", "metabolite name", "bin range(ppm)"})


@dataclass(frozen=True)
class MwTabMetabolite:
    line: int | None  # line in an mwTab text file; None for JSON
    name: str
    values: tuple[float | None, ...]  # one per sample, in ``MwTabStudy.samples`` order
    identifiers: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class MwTabStudy:
    path: Path
    sha256: str
    format: str  # mwtab | json
    study_id: str
    analysis_id: str
    project_id: str | None
    title: str
    summary: str | None
    description: str
    methods: str | None
    organism: tuple[str, ...]
    sample_type: tuple[str, ...]
    omics_type: str  # metabolomics, or lipidomics when the deposit says so
    data_section: str
    units: str | None
    samples: tuple[str, ...]
    metabolites: tuple[MwTabMetabolite, ...]
    non_numeric_cells: int
    binned: bool


def _text(section: Mapping[str, Any] | None, key: str) -> str | None:
    if not section:
        return None
    value = section.get(key)
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return None if value.lower() in _EMPTY else value


def _number(cell: object) -> float | None:
    if not isinstance(cell, str | int | float):
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _identifier_key(column: str) -> str | None:
    key = re.sub(r"[^a-z0-9]", "", column.lower())
    for needle, name in (
        ("pubchem", "pubchem_cid"),
        ("inchikey", "inchikey"),
        ("inchi", "inchi"),  # after inchikey: "inchi_key" contains both
        ("smiles", "smiles"),
        ("kegg", "kegg"),
        ("hmdb", "hmdb"),
        ("chebi", "chebi"),
        ("lipidmaps", "lipidmaps"),
        ("refmet", "refmet_name"),
    ):
        if needle in key:
            return name
    return None


def _name_of(row: Mapping[str, Any]) -> str:
    """The metabolite name of a Data or Metabolites row, whichever key the form uses; "" when it has none."""
    for key, value in row.items():
        if isinstance(key, str) and key.strip().lower() in _NAME_KEYS and value is not None and str(value).strip():
            return str(value).strip()
    return ""


def _is_name_key(key: object) -> bool:
    return isinstance(key, str) and key.strip().lower() in _NAME_KEYS


def _identifiers(row: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for column, value in row.items():
        if _is_name_key(column) or not isinstance(value, str) or value.strip().lower() in _EMPTY:
            continue
        key = _identifier_key(column)
        if key is not None:
            found.setdefault(key, value.strip())
    other, other_type = row.get("other_id"), row.get("other_id_type")
    if isinstance(other, str) and other.strip() and isinstance(other_type, str) and other_type.strip():
        type_key = re.sub(r"[^a-z0-9]+", "_", other_type.strip().lower()).strip("_")
        found.setdefault(type_key, other.strip())
    return found


def _data_lines(text: str, section: str) -> list[int]:
    """Line numbers of the data rows of ``section`` in an mwTab text file (header rows skipped)."""
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == f"{section}_START")
    except StopIteration:
        return []
    found: list[int] = []
    for index in range(start + 1, len(lines)):
        stripped = lines[index].strip()
        if stripped == f"{section}_END":
            break
        first = lines[index].split("\t", 1)[0].strip().lower()
        if not stripped or (not found and first in _HEADER_FIRST_CELLS):
            continue
        found.append(index + 1)
    return found


def _trimmed_width(cells: list[str]) -> int:
    """Cells up to the last non-empty one (editors and the Workbench leave trailing tabs)."""
    width = len(cells)
    while width and not cells[width - 1].strip():
        width -= 1
    return width


def check_text_rows(path: Path, text: str) -> None:
    """Refuse ragged data rows of an mwTab text file: IngestError with the line and the 1-based column (tab cell).

    The first line after ``<SECTION>_START`` is the samples header (``Samples`` / ``metabolite_name`` / ``Bin
    range(ppm)``) and sets the width; ``Factors`` may be shorter, never longer; a data row must have a cell for
    every sample (empty or ``NA`` for a value not measured) and no non-empty cell beyond the last sample.
    """
    lines = text.splitlines()
    for section in DATA_SECTIONS:
        start = next((i for i, ln in enumerate(lines) if ln.strip() == f"{section}_START"), None)
        if start is None or not any(ln.strip() == f"{section}_END" for ln in lines[start:]):
            continue  # no section, or a file that ends inside it: the parser reports that, with the line
        header_line = 0
        width = 0
        for index in range(start + 1, len(lines)):
            raw = lines[index]
            if raw.strip() == f"{section}_END":
                break
            if not raw.strip():
                continue
            cells = raw.split("\t")
            if not header_line:
                header_line, width = index + 1, _trimmed_width(cells)
                continue
            filled = _trimmed_width(cells)
            samples = width - 1
            if filled > width:
                what = "factors" if cells[0].strip().lower() == "factors" else "values"
                raise IngestError(
                    f"{section}: {filled - 1} {what}, but the samples header on line {header_line} names {samples} "
                    f"samples; cell {width + 1} onwards belongs to no sample",
                    path=path,
                    line=index + 1,
                    column=width + 1,
                )
            if cells[0].strip().lower() == "factors":
                continue
            if len(cells) < width:
                raise IngestError(
                    f"{section}: {len(cells) - 1} values for {samples} samples (header on line {header_line}); "
                    f"the row ends at cell {len(cells)}, so which samples lack a value is unknown: write an empty "
                    "cell or NA for a value not measured",
                    path=path,
                    line=index + 1,
                    column=len(cells) + 1,
                )


def _check_json_rows(path: Path, section: str, rows: list[Mapping[str, Any]]) -> tuple[str, ...]:
    """The samples of a JSON Data block, refusing a row that lacks one or has a key most rows do not have.

    A key is a sample when at least half of the rows have it: a row without it lacks a value; a key fewer rows have
    is a value that belongs to no sample.
    """
    counts: dict[str, int] = {}
    for row in rows:
        for key in row:
            if not _is_name_key(key):
                counts[key] = counts.get(key, 0) + 1
    samples = tuple(key for key, count in counts.items() if 2 * count >= len(rows))
    expected = set(samples)
    for index, row in enumerate(rows, start=1):
        keys = {k for k in row if not _is_name_key(k)}
        if keys == expected:
            continue
        name = _name_of(row) or "?"
        missing = [sample for sample in samples if sample not in keys]
        if missing:
            raise IngestError(
                f"{section} Data row {index} ({name!r}) has no value for sample {missing[0]!r} "
                f"({len(missing)} of {len(samples)} samples missing); a value not measured must still be given "
                '(e.g. "" or "NA")',
                path=path,
                column=missing[0],
            )
        extra = [key for key in row if key in keys - expected]
        raise IngestError(
            f"{section} Data row {index} ({name!r}) has a value for {extra[0]!r}, which most rows do not have: "
            "it belongs to no sample",
            path=path,
            column=extra[0],
        )
    return samples


def _parse_failure(path: Path, text: str, exc: BaseException) -> IngestError:
    message = str(exc).strip() or type(exc).__name__
    line: int | None = None
    # The mwtab tokenizer reports the offending text ("LINE WITH ERROR: '…'"); find it to name the line.
    if match := re.search(r"LINE WITH ERROR:\s*'(.*)'", message, re.DOTALL):
        offending = match.group(1).encode().decode("unicode_escape", errors="ignore").strip()
        for number, candidate in enumerate(text.splitlines(), start=1):
            if candidate.strip() == offending:
                line = number
                break
        message = "the file ends or breaks inside a section"
    elif "Unknown file format" in message:
        message = "not an mwTab file (neither mwTab text nor mwTab JSON)"
    else:
        message = message.splitlines()[-1][:300]
    return IngestError(f"cannot parse mwTab: {message}", path=path, line=line)


def _omics_type(tab: Mapping[str, Any]) -> str:
    texts: list[str] = []
    for section, keys in (("PROJECT", ("PROJECT_TYPE", "PROJECT_TITLE")), ("STUDY", ("STUDY_TYPE",))):
        texts += [t for k in keys if (t := _text(tab.get(section), k))]
    for section in ("ANALYSIS", "MS", "NM", "CHROMATOGRAPHY"):
        values = tab.get(section)
        if isinstance(values, Mapping):
            texts += [v for v in values.values() if isinstance(v, str)]
    return "lipidomics" if any(re.search(r"lipidom", t, re.IGNORECASE) for t in texts) else "metabolomics"


def read_mwtab(path: Path, *, allow_bins: bool = False) -> MwTabStudy:
    """Parse an mwTab deposit. Raises IngestError naming the file (and line when known)."""
    data = read_bytes(path)
    text = decode_utf8(path, data)
    fmt = "json" if text.lstrip().startswith("{") else "mwtab"
    if fmt == "mwtab":
        check_text_rows(path, text)
    tab = mwtab.mwtab.MWTabFile(str(path))
    try:
        tab.read_from_str(text)
    except Exception as exc:  # the library raises TypeError/ValueError/IndexError/KeyError… for bad files
        raise _parse_failure(path, text, exc) from None
    header = tab.get("METABOLOMICS WORKBENCH") or {}
    study_id, analysis_id = header.get("STUDY_ID"), header.get("ANALYSIS_ID")
    if not study_id or not analysis_id:
        raise IngestError("no STUDY_ID / ANALYSIS_ID in the METABOLOMICS WORKBENCH header", path=path, line=1)
    section = tab.data_section_key
    if section is None:
        raise IngestError(
            "no metabolite data (MS_METABOLITE_DATA or NMR_METABOLITE_DATA section); nothing to ingest", path=path
        )
    binned = section == "NMR_BINNED_DATA"
    if binned and not allow_bins:
        raise IngestError(
            "NMR_BINNED_DATA holds spectral bins (e.g. 0.4...0.46 ppm), not metabolites; "
            "pass --allow-bins to ingest the bins as features anyway",
            path=path,
        )
    block = tab[section]
    rows = block.get("Data") or []
    if not rows:
        raise IngestError(f"{section} has no data rows", path=path)
    samples = _check_json_rows(path, section, rows)
    lines = _data_lines(text, section) if fmt == "mwtab" else []
    if len(lines) != len(rows):
        lines = []

    identifiers: dict[str, dict[str, str]] = {}
    for row in block.get("Metabolites") or []:
        name = _name_of(row)
        if name:
            for key, value in _identifiers(row).items():
                identifiers.setdefault(name, {}).setdefault(key, value)

    metabolites: list[MwTabMetabolite] = []
    non_numeric = 0
    for index, row in enumerate(rows):
        name = _name_of(row)
        line = lines[index] if lines else None
        if not name:
            raise IngestError(f"{section} row {index + 1} has no metabolite name", path=path, line=line)
        values = tuple(_number(row.get(sample, "")) for sample in samples)
        non_numeric += sum(
            1
            for sample, value in zip(samples, values, strict=True)
            if value is None and str(row.get(sample, "")).strip().lower() not in _EMPTY
        )
        metabolites.append(MwTabMetabolite(line, name, values, identifiers.get(name, {})))

    study, project = tab.get("STUDY"), tab.get("PROJECT")
    title = _text(study, "STUDY_TITLE") or _text(project, "PROJECT_TITLE") or f"{study_id} {analysis_id}"
    analysis_type = _text(tab.get("ANALYSIS"), "ANALYSIS_TYPE")
    instrument = _text(tab.get("MS"), "INSTRUMENT_NAME") or _text(tab.get("NM"), "INSTRUMENT_NAME")
    institute = _text(study, "INSTITUTE") or _text(project, "INSTITUTE")
    parts = [
        f"Metabolomics Workbench study {study_id}, analysis {analysis_id}",
        f"project: {p}" if (p := _text(project, "PROJECT_TITLE")) else None,
        f"institute: {institute}" if institute else None,
        f"analysis: {analysis_type}" if analysis_type else None,
        f"instrument: {instrument}" if instrument else None,
        f"units: {u}" if (u := _text(block, "Units")) else None,
        f"{len(samples)} samples",
    ]
    methods = [
        f"{label}: {summary}"
        for label, sec, key in (
            ("Collection", "COLLECTION", "COLLECTION_SUMMARY"),
            ("Treatment", "TREATMENT", "TREATMENT_SUMMARY"),
            ("Sample preparation", "SAMPLEPREP", "SAMPLEPREP_SUMMARY"),
            ("Chromatography", "CHROMATOGRAPHY", "CHROMATOGRAPHY_SUMMARY"),
        )
        if (summary := _text(tab.get(sec), key))
    ]
    species = _text(tab.get("SUBJECT"), "SUBJECT_SPECIES")
    sample_type = _text(tab.get("COLLECTION"), "SAMPLE_TYPE")
    return MwTabStudy(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        study_id=str(study_id),
        analysis_id=str(analysis_id),
        project_id=str(header["PROJECT_ID"]) if header.get("PROJECT_ID") else None,
        title=title,
        summary=_text(study, "STUDY_SUMMARY"),
        description="; ".join(p for p in parts if p),
        methods="\n".join(methods) or None,
        organism=(species,) if species else (),
        sample_type=(sample_type,) if sample_type else (),
        omics_type=_omics_type(tab),
        data_section=section,
        units=_text(block, "Units"),
        samples=samples,
        metabolites=tuple(metabolites),
        non_numeric_cells=non_numeric,
        binned=binned,
    )
