"""Typed errors for ingest: bad input that says what is wrong and where.

Readers, normalizers and the writer raise :class:`IngestError` for anything a user can fix in their file or command
line. The CLI prints ``str(error)`` (``data.csv:12:log2FC: not a number: 'abc'``) and exits with code 2; nothing
is written when one is raised, because every command runs in one transaction.
"""

from __future__ import annotations

import os


class IngestError(Exception):
    """Bad input: says what and where. The CLI prints str(error) and exits 2."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        column: str | int | None = None,
    ) -> None:
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        # "file:line:column: message", leaving out whichever location parts are unknown.
        where = [str(part) for part in (self.path, self.line, self.column) if part is not None]
        return ":".join([*where, f" {self.message}"]) if where else self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the location when the error crosses a process boundary (pickle would otherwise call
        # __init__ with str(self) only).
        return (_rebuild, (self.message, self.path, self.line, self.column))

    def __repr__(self) -> str:
        return f"IngestError({self.message!r}, path={self.path!r}, line={self.line!r}, column={self.column!r})"


def _rebuild(message: str, path: str | None, line: int | None, column: str | int | None) -> IngestError:
    return IngestError(message, path=path, line=line, column=column)
