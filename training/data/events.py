"""Raw interaction events: which column plays which role, reading a user's file, and checking it.

The column mapping is the contract between a user's events and the workflow:

    session: session_id        # optional: sessions are derived by an inactivity gap without it
    user: user_id              # optional for session views, required for the sequential view
    item: item_id
    time: timestamp            # unix seconds, datetime, or a parsable date string
    categorical: [category]    # per-event categorical features (item side information)
    continuous: [price]        # per-event continuous features
    context_categorical: [device]   # per-session/user context, one value per sequence
    context_continuous: []
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.parquet import read_parquet


class EventsError(ValueError):
    """Bad raw input: the message names the file or column, the expected and the received."""


@dataclass(frozen=True)
class EventColumns:
    item: str
    time: str
    session: str | None = None
    user: str | None = None
    categorical: tuple[str, ...] = ()
    continuous: tuple[str, ...] = ()
    context_categorical: tuple[str, ...] = ()
    context_continuous: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, mapping: dict, source: str = "mapping") -> "EventColumns":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise EventsError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        missing = [key for key in ("item", "time") if not mapping.get(key)]
        if missing:
            raise EventsError(f"{source}: missing required key(s) {missing}")
        values = {}
        for key, value in mapping.items():
            if key in ("item", "time", "session", "user"):
                if value is not None and not isinstance(value, str):
                    raise EventsError(f"{source}: key {key!r} expects one column name, got {value!r}")
                values[key] = value
            else:
                if isinstance(value, str):
                    value = [value]
                values[key] = tuple(value or ())
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "EventColumns":
        path = Path(path)
        if not path.is_file():
            raise EventsError(f"mapping file {path} does not exist")
        text = path.read_text()
        if path.suffix == ".json":
            mapping = json.loads(text)
        else:
            import yaml

            mapping = yaml.safe_load(text)
        if not isinstance(mapping, dict):
            raise EventsError(f"mapping file {path}: expected a mapping of role -> column, got {type(mapping).__name__}")
        return cls.from_mapping(mapping, source=f"mapping file {path}")

    def roles(self) -> dict[str, str]:
        """column -> role, for every column the mapping names."""
        named: dict[str, str] = {}
        for role in ("session", "user", "item", "time"):
            if getattr(self, role):
                named[getattr(self, role)] = role
        for role in ("categorical", "continuous", "context_categorical", "context_continuous"):
            for column in getattr(self, role):
                named[column] = role
        return named

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


def read_event_file(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise EventsError(f"events file {path} does not exist")
    if path.is_dir() or path.suffix == ".parquet":
        events = read_parquet(path)
    elif path.suffix in (".csv", ".tsv", ".txt"):
        if path.stat().st_size == 0:
            raise EventsError(f"events file {path} is empty: expected a header and at least one event")
        events = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    else:
        raise EventsError(f"events file {path}: expected .parquet, .csv or .tsv, got {path.suffix or 'no suffix'!r}")
    if events.empty:
        raise EventsError(f"events file {path} has no events (columns: {list(events.columns)})")
    return events


def to_unix_seconds(values: pd.Series, column: str) -> np.ndarray:
    """Timestamps as int64 unix seconds from numbers, datetimes or parsable strings."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if values.isna().any():
            raise EventsError(f"column {column!r} (time): {int(values.isna().sum())} missing timestamps")
        return values.to_numpy().astype(np.int64)
    else:
        parsed = pd.to_datetime(values, errors="coerce", utc=True)
        bad = parsed.isna() & values.notna() | values.isna()
        if bad.any():
            example = values[bad].iloc[0]
            raise EventsError(
                f"column {column!r} (time): {int(bad.sum())} unparsable timestamps, e.g. {example!r}; "
                "expected unix seconds, datetimes or date strings"
            )
    if parsed.isna().any():
        raise EventsError(f"column {column!r} (time): {int(parsed.isna().sum())} missing timestamps")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return (parsed.to_numpy().astype("datetime64[s]")).astype(np.int64)


def validate_events(events: pd.DataFrame, columns: EventColumns, source: str) -> pd.DataFrame:
    """Check every mapped column exists and ids are complete; return the mapped columns with
    the time column as int64 unix seconds."""
    if events.empty:
        raise EventsError(f"{source} has no events")
    roles = columns.roles()
    missing = [f"{name!r} ({role})" for name, role in roles.items() if name not in events.columns]
    if missing:
        raise EventsError(f"{source}: mapped column(s) {', '.join(missing)} not found; it has {list(events.columns)}")
    for role in ("session", "user", "item"):
        name = getattr(columns, role)
        if name and events[name].isna().any():
            raise EventsError(f"{source}: column {name!r} ({role} id) has {int(events[name].isna().sum())} missing values")
    for name in (*columns.continuous, *columns.context_continuous):
        if not pd.api.types.is_numeric_dtype(events[name]):
            raise EventsError(f"{source}: continuous column {name!r} must be numeric, got dtype {events[name].dtype}")
    mapped = events[list(roles)].copy()
    mapped[columns.time] = to_unix_seconds(events[columns.time], columns.time)
    return mapped


def check_continuous(events: pd.DataFrame, columns: EventColumns, log_transform: bool) -> None:
    """Continuous features must be finite (missing is fine: it takes the training median) and,
    under a log transform, non-negative."""
    for name in (*columns.continuous, *columns.context_continuous):
        values = events[name].to_numpy(dtype=float)
        infinite = np.isinf(values)
        if infinite.any():
            raise EventsError(f"continuous column {name!r}: {int(infinite.sum())} infinite values; expected finite numbers")
        if log_transform and (values < 0).any():
            raise EventsError(
                f"continuous column {name!r}: {int((values < 0).sum())} negative values (min {np.nanmin(values)}) "
                "cannot take --continuous log-normalize; use normalize or bucketize"
            )
