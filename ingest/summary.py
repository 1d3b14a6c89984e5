"""The end-of-command summary: what was read, what changed, which signatures match — as a Rich table for a
person or as JSON (``--json``) for a machine. Both come from the same :class:`IngestSummary`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from ingest.pipeline import ReadReport
from ingest.writer import MatchOutcome, WriteResult


@dataclass(frozen=True)
class IngestSummary:
    command: str
    dry_run: bool
    result: WriteResult
    report: ReadReport | None = None
    # Wall time of the whole command, and of each phase the progress display showed (reading, writing, …).
    seconds: float | None = None
    phases: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        result = self.result
        out: dict[str, Any] = {
            "command": self.command,
            "dry_run": self.dry_run,
            "entity": result.entity,
            "id": str(result.entity_id),
            "name": result.name,
            "status": result.status,
            "changed_columns": list(result.changed_columns),
            "rows_changed": result.rows_changed,
            "changes": {
                c.table: {"inserted": c.inserted, "updated": c.updated, "deleted": c.deleted} for c in result.changes
            },
            "notes": list(result.created_links),
        }
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
            out["phases"] = [{"phase": name, "seconds": round(seconds, 3)} for name, seconds in self.phases]
        if self.report is not None:
            report = self.report
            out["read"] = {
                "path": report.path,
                "kind": report.kind,
                "rows_read": report.rows_read,
                "features": report.features,
                "normalized": report.normalized,
                "unparsed": report.unparsed,
                "unparsed_examples": list(report.unparsed_examples),
                "merged_duplicates": [
                    {"feature": g.feature, "raw_names": list(g.raw_names), "lines": list(g.lines), "rule": g.rule}
                    for g in report.merged
                ],
                "notes": list(report.notes),
                "excel_dates": [{"written": raw, "stored_as": symbol} for raw, symbol in report.excel_dates],
            }
        out["signature_matches"] = [_match_dict(m) for m in result.matches]
        return out


def _match_dict(match: MatchOutcome) -> dict[str, Any]:
    return {
        "dataset": match.dataset_name,
        "dataset_id": str(match.dataset_id),
        "signature": match.signature_name,
        "signature_id": str(match.signature_id),
        "score": match.score,
        "overlap_fraction": match.overlap_fraction,
        "matched_components": match.matched_components,
        "total_components": match.total_components,
        "match_level": match.match_level,
        "change": match.change,
    }


def render(summary: IngestSummary, console: Console) -> None:
    result, report = summary.result, summary.report
    if summary.dry_run:
        console.print("[bold yellow]dry run[/]: nothing was written; below is what this command would change.")
    table = Table(title=f"ingest {summary.command}: {result.entity} {result.name!r}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row(
        "status", result.status + (f" ({', '.join(result.changed_columns)})" if result.changed_columns else "")
    )
    if report is not None:
        table.add_row("file", f"{report.path} ({report.kind})")
        table.add_row("rows read", str(report.rows_read))
        table.add_row("features", str(report.features))
        table.add_row("normalized", str(report.normalized))
        unparsed = str(report.unparsed)
        if report.unparsed_examples:
            unparsed += " — kept as written, e.g. " + ", ".join(report.unparsed_examples)
        table.add_row("unparsed", unparsed)
        if report.merged:
            shown = "; ".join(f"{g.feature} ← {' + '.join(g.raw_names)} ({g.rule})" for g in report.merged[:5]) + (
                f"; … {len(report.merged) - 5} more" if len(report.merged) > 5 else ""
            )
            table.add_row("merged duplicates", f"{len(report.merged)}: {shown}")
        for note in report.notes:
            table.add_row("note", note)
    for note in result.created_links:
        table.add_row("note", note)
    if result.changes:
        for change in result.changes:
            table.add_row(
                f"rows {change.table}",
                f"+{change.inserted} inserted, ~{change.updated} updated, -{change.deleted} deleted",
            )
    else:
        table.add_row("rows changed", "none (already up to date)")
    if summary.seconds is not None:
        split = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in summary.phases)
        table.add_row("time", f"{summary.seconds:.1f} s" + (f" ({split})" if split else ""))
    console.print(table)
    if result.matches:
        matches = Table(title="signature matches")
        for column in ("dataset", "signature", "score", "overlap", "matched", "level", "change"):
            matches.add_column(column)
        for m in result.matches:
            matches.add_row(
                m.dataset_name,
                m.signature_name,
                f"{m.score:.3f}" if m.score is not None else "—",
                f"{m.overlap_fraction:.2f}" if m.overlap_fraction is not None else "—",
                f"{m.matched_components}/{m.total_components}",
                m.match_level or "—",
                m.change,
            )
        console.print(matches)
    elif result.entity in ("dataset", "signature"):
        console.print("signature matches: none")
