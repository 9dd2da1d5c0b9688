"""Parquet files read by path, never through a Python file object.

`pandas.read_parquet` opens a local file itself and hands pyarrow the Python file object; pyarrow's
reader threads then sometimes outlive the interpreter and abort the process as it exits ("terminate
called without an active exception", exit 134; apache/arrow#34314 and #50482) after all its work
is done: 11 of 40 runs of a three-line script here, and `make setup` failed on it. Given the path,
pyarrow reads the file natively and every run exits cleanly (0 of 100).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet file or folder of files as pandas, as `pandas.read_parquet` gives it."""
    return pq.read_table(str(path), columns=columns).to_pandas()
