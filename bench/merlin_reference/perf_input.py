"""perf_analyzer `--input-data` for merlin's ensemble: one session (one user's raw events) per
request, every session distinct; perf_analyzer sends the entries in turn.

perf_analyzer 2.51's format: {"data": [{"INPUT": {"content": [...], "shape": [n]}, ...}, ...]},
BYTES contents as strings. merlin's executor takes flat events (one row per event, the
sequence key repeated on each), so an entry is a session's events, column by column.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.output import write_json


def _is_ascii(column: pd.Series) -> bool:
    return bool(column.map(lambda value: str(value).isascii()).all())


def _content(column: pd.Series, dtype: str) -> list:
    if dtype == "BYTES":
        return column.astype(str).tolist()
    if dtype.startswith("FP"):
        return column.astype(float).tolist()
    return column.astype(np.int64).tolist()


def write_perf_input(events: pd.DataFrame, path: Path, inputs: dict[str, str], sequence_key: str,
                     max_sessions: int | None = None) -> dict:
    """One request per value of `sequence_key` in `events` (in order of first appearance), with
    the columns `inputs` names (name -> Triton dtype, as build_repository returns them).
    Sessions holding a non-ASCII string are left out: merlin's workflow step decodes BYTES with
    numpy's ASCII codec and fails on them (see README.md). Returns {"sessions", "skipped",
    "events"}."""
    missing = [name for name in inputs if name not in events.columns]
    if missing:
        raise ValueError(f"events: expected columns {sorted(inputs)}, missing {missing}")
    text = [name for name, dtype in inputs.items() if dtype == "BYTES"]
    entries, skipped, n_events = [], 0, 0
    for _, session in events.groupby(sequence_key, sort=False):
        if max_sessions is not None and len(entries) >= max_sessions:
            break
        if not all(_is_ascii(session[name]) for name in text):
            skipped += 1
            continue
        entries.append({name: {"content": _content(session[name], dtype), "shape": [len(session)]}
                        for name, dtype in inputs.items()})
        n_events += len(session)
    if not entries:
        raise ValueError(f"events: no session to write ({skipped} left out for non-ASCII strings)")
    write_json(path, {"data": entries}, indent=None)
    return {"sessions": len(entries), "skipped": skipped, "events": n_events}
