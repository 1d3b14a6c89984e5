"""The store's SQL file: every statement is named once, and every name the store asks for exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import replicator.store
from replicator.store.queries import QUERIES, parse


def test_a_queries_file_splits_into_named_statements_without_their_comments() -> None:
    text = "-- header\n-- name: one\n-- why it is safe\nSELECT 1\n\n-- name: two\nSELECT\n  2\n"
    assert parse(text) == {"one": "SELECT 1", "two": "SELECT\n  2"}


def test_a_repeated_query_name_is_refused() -> None:
    with pytest.raises(ValueError, match="repeated"):
        parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


def test_every_query_the_store_uses_is_in_the_sql_file_and_every_statement_is_used() -> None:
    folder = Path(replicator.store.__file__).parent
    used = {name for path in folder.glob("*.py") for name in re.findall(r'QUERIES\["(\w+)"\]', path.read_text())}
    assert used == set(QUERIES)
    assert all(QUERIES[name].strip() for name in QUERIES)


def test_only_the_store_holds_sql_on_the_replicator_schema() -> None:
    root = Path(replicator.store.__file__).parent.parent
    statement = re.compile(r"\b(FROM|INTO|UPDATE|JOIN)\s+replicator\.\w+")  # our SQL keywords are upper case
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "store" not in path.relative_to(root).parts and statement.search(path.read_text())
    ]
    assert offenders == []
