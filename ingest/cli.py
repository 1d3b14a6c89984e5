"""The ``ingest`` command line (Typer): parse options, call :mod:`ingest.pipeline`, print a summary.

Exit codes: 0 done, 1 failed (database unreachable or refusing), 2 bad input or usage. Input is read and checked
before the database is touched, and each command writes in one transaction, so a bad file writes nothing.
The database comes from ``--db`` or ``POSTGRES_URL``; its password never appears in any message.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import psycopg
import typer
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ingest.duplicates import RULES
from ingest.errors import IngestError
from ingest.pipeline import (
    OMICS_TYPES,
    DatasetOptions,
    ReadReport,
    connect,
    ingest_dataset,
    ingest_experiment,
    ingest_program,
    ingest_signature,
    prepare_mwtab_dataset,
    prepare_signature,
    prepare_table_dataset,
)
from ingest.scoring import ScoringOptions
from ingest.summary import IngestSummary, render
from ingest.writer import DatasetInput, ExperimentInput, ProgramInput, WriteResult

app = typer.Typer(
    help="Ingest omics files into Postgres (and nowhere else). One transaction per command; re-running an "
    "unchanged file changes nothing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Files at least this large get a progress bar (when a person is watching stderr).
PROGRESS_MIN_BYTES = 1_000_000

T = TypeVar("T")

Db = Annotated[
    str | None,
    typer.Option("--db", envvar="POSTGRES_URL", help="Postgres URL (default: $POSTGRES_URL).", show_default=False),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Run everything, then roll back; show what would change.")]
Json = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
Programs = Annotated[list[str] | None, typer.Option("--program", help="Link to this program (repeatable).")]
Experiments = Annotated[list[str] | None, typer.Option("--experiment", help="Link to this experiment (repeatable).")]
Diseases = Annotated[list[str] | None, typer.Option("--disease", help="Disease (repeatable).")]
OverlapThreshold = Annotated[
    float, typer.Option("--overlap-threshold", min=0.0, max=1.0, help="Minimum overlap for a signature match.")
]
MaxP = Annotated[
    float, typer.Option("--max-p", min=0.0, max=1.0, help="A dataset direction counts only when p <= this.")
]
OnDuplicate = Annotated[
    str,
    typer.Option(
        "--on-duplicate",
        help=f"Rows naming the same feature: {' | '.join(RULES)}. 'error' refuses a repeated name and merges "
        "different spellings of one feature by keeping the first.",
    ),
]

_stderr = Console(stderr=True)


class _FailedError(Exception):
    """A failure that is not the user's input (exit 1)."""


class _RichProgress:
    """Progress phases as Rich bars on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def phase(self, description: str, total: int | None) -> None:
        if self._task is not None:
            task = self._progress.tasks[-1]
            self._progress.update(self._task, completed=task.total or task.completed)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None and amount:
            self._progress.advance(self._task, amount)


class _NoProgress:
    def phase(self, description: str, total: int | None) -> None:
        return None

    def advance(self, amount: int = 1) -> None:
        return None


class _PhaseClock:
    """The wall time of a command and of each progress phase it went through (the summary's ``phases``)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._phases: list[tuple[str, float]] = []

    def phase(self, description: str) -> None:
        self._phases.append((description, time.perf_counter()))

    def phases(self, until: float) -> tuple[tuple[str, float], ...]:
        ends = [start for _, start in self._phases[1:]] + [until] if self._phases else []
        return tuple((name, end - start) for (name, start), end in zip(self._phases, ends, strict=True))


class _TimedProgress:
    """Forwards to a progress display and tells a :class:`_PhaseClock` when each phase begins."""

    def __init__(self, display: _RichProgress | _NoProgress, clock: _PhaseClock) -> None:
        self._display = display
        self._clock = clock

    def phase(self, description: str, total: int | None) -> None:
        self._clock.phase(description)
        self._display.phase(description, total)

    def advance(self, amount: int = 1) -> None:
        self._display.advance(amount)


@contextmanager
def _progress_for(path: Path | None, json_output: bool, clock: _PhaseClock) -> Iterator[_TimedProgress]:
    large = path is not None and path.is_file() and path.stat().st_size >= PROGRESS_MIN_BYTES
    if not (large and sys.stderr.isatty()):
        yield _TimedProgress(_NoProgress(), clock)
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_stderr,
        transient=True,
    ) as progress:
        yield _TimedProgress(_RichProgress(progress), clock)


def _redact(message: str, url: str) -> str:
    # The password is taken from the URL's text (a URL psycopg cannot parse quotes it in its own error).
    # Imported here, on the error path: importing the schema package loads SQLAlchemy and the models (~0.3 s
    # of every command's start), which nothing else of the CLI needs.
    from schema.redaction import redact, url_secrets

    return redact(message, url_secrets(url))


def _where(url: str) -> str:
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the database (the URL does not parse)"
    host = info.get("host") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _with_database(url: str | None, work: Callable[[psycopg.Connection[Any]], T]) -> T:
    if not url:
        raise IngestError("no database: pass --db URL or set POSTGRES_URL")
    try:
        with connect(url) as conn:
            return work(conn)
    except psycopg.OperationalError as exc:
        reason = _redact(" ".join(str(exc).split()) or type(exc).__name__, url)
        raise _FailedError(f"cannot use the database at {_where(url)}: {reason}") from None
    except psycopg.errors.UndefinedTable as exc:
        raise _FailedError(
            f"the database at {_where(url)} is not migrated ({_redact(str(exc).splitlines()[0], url)}); "
            "run `make migrate` or `alembic upgrade head`"
        ) from None
    except psycopg.ProgrammingError as exc:
        # Raised before any statement for a URL psycopg cannot parse (e.g. a password with a bad % escape).
        raise _FailedError(f"cannot use the database at {_where(url)}: {_redact(str(exc).strip(), url)}") from None
    except psycopg.Error as exc:
        raise _FailedError(f"database error: {_redact(str(exc).strip(), url)}") from None


def _run(
    command: str,
    dry_run: bool,
    json_output: bool,
    action: Callable[[_PhaseClock], tuple[WriteResult, ReadReport | None]],
) -> None:
    clock = _PhaseClock()
    try:
        result, report = action(clock)
    except IngestError as exc:
        _stderr.print(f"[red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None
    except _FailedError as exc:
        _stderr.print(f"[red]failed:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    ended = time.perf_counter()
    summary = IngestSummary(
        command=command,
        dry_run=dry_run,
        result=result,
        report=report,
        seconds=ended - clock.started,
        phases=clock.phases(ended),
    )
    if json_output:
        sys.stdout.write(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render(summary, Console())


@app.command()
def dataset(
    path: Annotated[Path, typer.Argument(help="CSV/TSV table: one row per feature, or a sample matrix.")],
    omics_type: Annotated[str, typer.Option("--omics-type", help=" | ".join(OMICS_TYPES))],
    name: Annotated[str | None, typer.Option(help="Dataset name (default: 'Internal <Omics> — <file stem>').")] = None,
    key: Annotated[str | None, typer.Option(help="Natural key: re-ingesting with it updates the same dataset.")] = None,
    program: Programs = None,
    experiment: Experiments = None,
    organism: Annotated[list[str] | None, typer.Option(help="Organism (repeatable).")] = None,
    disease: Diseases = None,
    description: Annotated[str | None, typer.Option()] = None,
    feature_column: Annotated[
        str | None, typer.Option(help="The column naming features (overrides detection).")
    ] = None,
    on_duplicate: OnDuplicate = "error",
    overlap_threshold: OverlapThreshold = 0.3,
    max_p: MaxP = 0.05,
    db: Db = None,
    dry_run: DryRun = False,
    json_output: Json = False,
) -> None:
    """Ingest a feature table (lipidomics, metabolomics, proteomics, transcriptomics)."""
    options = DatasetOptions(
        omics_type=omics_type,
        name=name,
        key=key,
        description=description,
        organism=tuple(organism) if organism else None,
        disease=tuple(disease) if disease else None,
        programs=tuple(program or ()),
        experiments=tuple(experiment or ()),
        feature_column=feature_column,
        on_duplicate=on_duplicate,
        scoring=ScoringOptions(overlap_threshold=overlap_threshold, max_p_value=max_p),
    )

    _ingest_dataset_file("dataset", path, options, prepare_table_dataset, db, dry_run, json_output)


def _ingest_dataset_file(
    command: str,
    path: Path,
    options: DatasetOptions,
    prepare: Callable[[Path, DatasetOptions, Any], tuple[DatasetInput, ReadReport]],
    db: str | None,
    dry_run: bool,
    json_output: bool,
) -> None:
    """Read and normalize the file (no database needed), then write it in one transaction."""

    def action(clock: _PhaseClock) -> tuple[WriteResult, ReadReport | None]:
        with _progress_for(path, json_output, clock) as progress:
            prepared, report = prepare(path, options, progress)
            result = _with_database(
                db,
                lambda conn: ingest_dataset(
                    conn, prepared, scoring=options.scoring, dry_run=dry_run, progress=progress
                ),
            )
        return result, report

    _run(command, dry_run, json_output, action)


@app.command()
def mwtab(
    path: Annotated[Path, typer.Argument(help="A Metabolomics Workbench mwTab file (text or JSON).")],
    allow_bins: Annotated[
        bool, typer.Option("--allow-bins", help="Ingest NMR_BINNED_DATA bins as features (refused by default).")
    ] = False,
    omics_type: Annotated[
        str | None, typer.Option("--omics-type", help="Override: metabolomics, or lipidomics when the deposit says so.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the study title).")] = None,
    program: Programs = None,
    experiment: Experiments = None,
    disease: Diseases = None,
    on_duplicate: Annotated[
        str, typer.Option("--on-duplicate", help=f"Repeated metabolites: {' | '.join(RULES[1:])} (default mean).")
    ] = "mean",
    overlap_threshold: OverlapThreshold = 0.3,
    max_p: MaxP = 0.05,
    db: Db = None,
    dry_run: DryRun = False,
    json_output: Json = False,
) -> None:
    """Ingest a Metabolomics Workbench deposit: study metadata, metabolites and their identifiers."""
    options = DatasetOptions(
        omics_type=omics_type,
        name=name,
        disease=tuple(disease) if disease else None,
        programs=tuple(program or ()),
        experiments=tuple(experiment or ()),
        on_duplicate=on_duplicate,
        allow_bins=allow_bins,
        scoring=ScoringOptions(overlap_threshold=overlap_threshold, max_p_value=max_p),
    )

    _ingest_dataset_file("mwtab", path, options, prepare_mwtab_dataset, db, dry_run, json_output)


@app.command()
def signature(
    path: Annotated[
        Path, typer.Argument(help="TSV/CSV: feature, direction (↑ ↓ up down + - neutral complex), weight.")
    ],
    name: Annotated[str | None, typer.Option(help="Signature name (default: the file stem).")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    program: Programs = None,
    overlap_threshold: OverlapThreshold = 0.3,
    max_p: MaxP = 0.05,
    db: Db = None,
    dry_run: DryRun = False,
    json_output: Json = False,
) -> None:
    """Ingest a signature and score it against every dataset."""
    scoring = ScoringOptions(overlap_threshold=overlap_threshold, max_p_value=max_p)

    def action(_: _PhaseClock) -> tuple[WriteResult, ReadReport | None]:
        prepared, report = prepare_signature(path, name=name, description=description, programs=tuple(program or ()))
        result = _with_database(db, lambda conn: ingest_signature(conn, prepared, scoring=scoring, dry_run=dry_run))
        return result, report

    _run("signature", dry_run, json_output, action)


@app.command()
def program(
    name: Annotated[str, typer.Argument(help="Program name (its key).")],
    description: Annotated[str | None, typer.Option()] = None,
    disease: Diseases = None,
    db: Db = None,
    dry_run: DryRun = False,
    json_output: Json = False,
) -> None:
    """Create or update a program."""
    value = ProgramInput(name=name, description=description, disease=tuple(disease) if disease else None)
    _run(
        "program",
        dry_run,
        json_output,
        lambda _: (_with_database(db, lambda conn: ingest_program(conn, value, dry_run=dry_run)), None),
    )


@app.command()
def experiment(
    name: Annotated[str, typer.Argument(help="Experiment name (its key).")],
    type: Annotated[str | None, typer.Option("--type", help="in_vivo | in_vitro | patient")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    program: Programs = None,
    disease: Diseases = None,
    db: Db = None,
    dry_run: DryRun = False,
    json_output: Json = False,
) -> None:
    """Create or update an experiment."""
    if type is not None and type not in ("in_vivo", "in_vitro", "patient"):
        _stderr.print(f"[red]error:[/] --type {type!r}: expected in_vivo, in_vitro or patient")
        raise typer.Exit(2)
    value = ExperimentInput(
        name=name,
        type=type,
        description=description,
        disease=tuple(disease) if disease else None,
        programs=tuple(program or ()),
    )
    _run(
        "experiment",
        dry_run,
        json_output,
        lambda _: (_with_database(db, lambda conn: ingest_experiment(conn, value, dry_run=dry_run)), None),
    )


def main() -> None:
    app()
