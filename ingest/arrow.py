"""pyarrow for the table path (``readers.table_arrow``, ``columns``, ``writer.staging_arrow``), imported only when a
table is read (pyarrow takes a few tenths of a second to import, which the other commands never need).

pyarrow imports pandas (installed with mwtab) the first time it converts Python objects, to recognise pandas'
objects and missing values: about 0.4 s once per process. It is not kept out with an import hook, since a hook is
global to the process and would break another thread's (or a caller's normalizer's) ``import pandas``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["pa", "pacsv", "pc"]
