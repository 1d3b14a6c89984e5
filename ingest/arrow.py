"""pyarrow for the table path (``readers.table_arrow``, ``columns``, ``writer.staging_arrow``), and a way to keep it
from importing pandas while a table is read.

pyarrow imports pandas when it converts Python objects (``pa.array`` of a list, ``pa.scalar``, a Python string
passed to a kernel), to recognise pandas objects and pandas' missing values; when the import fails it goes on
without (pyarrow's ``_PandasAPIShim`` and ``InitPandasStaticData``). Importing pandas costs about half a second and
tens of MB, and the table path never hands pyarrow a pandas object, so :func:`without_pandas` makes ``import
pandas`` fail for the streaming pass over a table (and only when pandas is not imported yet). pandas stays
importable before and after (mwTab reading uses it).

Imported only when a table is read (pyarrow itself takes a few tenths of a second to import).
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["pa", "pacsv", "pc", "without_pandas"]


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not imported while a table is read (ingest.arrow.without_pandas)", name=name)


@contextmanager
def without_pandas() -> Iterator[None]:
    """``import pandas`` fails inside (unless pandas is imported already): pyarrow then converts without it."""
    if "pandas" in sys.modules:
        yield
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
