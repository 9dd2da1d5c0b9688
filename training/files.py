"""Files written to a temporary sibling and renamed over their path: a reader never sees one half-written."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path


def replace_file(path: Path, write) -> None:
    """`write(tmp)` a sibling temporary file, then rename it over `path`: never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def replace_json(path: Path, value, indent: int | None = 1) -> None:
    replace_file(path, lambda p: p.write_text(json.dumps(value, indent=indent) + "\n"))


def replace_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """A CSV of `rows` (columns: the first row's keys unless given), replaced whole."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns or list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    replace_file(path, write)
