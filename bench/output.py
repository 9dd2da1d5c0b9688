"""Every bench result file is written whole or not at all: a reader (or a rerun that reuses it)
never sees half a file when a benchmark is killed mid-write."""
from __future__ import annotations

from pathlib import Path

from training.files import replace_json


def write_json(path: Path, value, indent: int | None = 1) -> Path:
    """`value` as JSON at `path` (its folder made), through a temporary file renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_json(path, value, indent)
    return path
