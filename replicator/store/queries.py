"""The named statements of ``queries.sql``, loaded once. ``QUERIES["claim_batch"]`` is the text of the block headed
``-- name: claim_batch``; its comment lines (the reasons it is safe) stay in the SQL file, next to the statement."""

from __future__ import annotations

from importlib.resources import files
from types import MappingProxyType
from typing import Final

_HEADER = "-- name: "


def parse(text: str) -> dict[str, str]:
    """Split a queries file into ``{name: statement}``; comment lines are dropped, blank lines end nothing."""
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(_HEADER):
            name = line[len(_HEADER) :].strip()
            if not name or name in queries:
                raise ValueError(f"queries.sql: empty or repeated query name {name!r}")
            current = queries[name] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in queries.items()}


def _load() -> MappingProxyType[str, str]:
    # The file ships with the package and is never built from input: each statement is a literal of ours.
    return MappingProxyType(parse(files("replicator.store").joinpath("queries.sql").read_text(encoding="utf-8")))


QUERIES: Final = _load()
