"""Offline top-k recommendations for your own events, as the served ensemble answers them.

    python -m training.predict --run RUN --events EVENTS.parquet|csv [--mapping M] [--k 20] [--all-positions]
        [--[no-]exclude-seen] --out PREDICTIONS.parquet|csv

Each session (the run's sequence key) of EVENTS gets its k best ORIGINAL item ids and scores,
best first (ties to the lower item code), through the same request-time transform (plain data,
no pickle) and model as the served ensemble. Sessions go through in chunks, so memory stays
bounded by the chunk's [sessions, catalog] scores. One row per (session, rank).
--mapping: EVENTS' role -> column mapping (as training.prepare takes it); without it EVENTS has
the run's own column names and unix-second times. --all-positions: the answer after every event
(column `position`: the events seen, 1..n, in time order), as if the session ended there.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from training import cli, run_dir
from training.files import replace_file
from training.data import prepared, request_transform, views
from training.allocator import keep_freed_memory
from training.data.events import EventColumns, validate_events
from training.data.parquet import read_parquet
from training.progress import Progress
from training.recommend import top_items, top_items_every_position

FORMATS = (".parquet", ".csv")


def read_events(path: Path) -> pd.DataFrame:
    if path.suffix not in FORMATS:
        raise ValueError(f"--events {path}: expected a {' or '.join(FORMATS)} file, got {path.suffix or 'no suffix'!r}")
    if not path.is_file():
        raise FileNotFoundError(f"--events {path}: no such file")
    return read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def in_run_columns(events: pd.DataFrame, mapping: Path, data: Path, source: str) -> tuple[pd.DataFrame, str]:
    """Events named by `mapping` -> (the same events under the run's column names, times in unix seconds,
    keyed as the run's view keys them; the events' name of the sequence key). Roles pair columns, lists in order."""
    own, summary = EventColumns.load(mapping), prepared.load_summary(data)
    run = EventColumns.from_mapping(summary["columns"])
    own_slots = _slots(own)
    renamed = {own_slots[slot]: column for slot, column in _slots(run).items() if slot in own_slots}
    events = validate_events(events, own, source)[list(renamed)].rename(columns=renamed)
    derive = not own.session and run.session == views.DERIVED_SESSION  # sessions cut by inactivity, as prepare cut them
    keyed_by = EventColumns(**{**run.to_dict(), "session": None if derive else run.session})
    events, key = views.sequence_key(events, keyed_by, summary["view"], int(summary["options"]["session_gap_minutes"] * 60))
    transform, roles = request_transform.load(data), run.roles()
    for column in [key, *(raw["name"] for raw in transform["inputs"])]:
        if column not in events.columns:
            raise ValueError(f"--mapping {mapping}: expected a column for the run's {roles.get(column, 'sequence key')} "
                             f"column {column!r}, got a mapping of {own.to_dict()}")
    return events, {run: name for name, run in renamed.items()}.get(key, key)


def _slots(columns: EventColumns) -> dict[tuple[str, int], str]:
    """(role, index within the role) -> column name, for every column a mapping names."""
    out = {}
    for role, value in columns.to_dict().items():
        for index, name in enumerate([value] if isinstance(value, str) else value or []):
            out[(role, index)] = name
    return out


def predict(run: Path, events: pd.DataFrame, k: int, exclude_seen: bool | None = None, sessions_per_chunk: int = 256,
            progress=lambda done, total: None, all_positions: bool = False) -> pd.DataFrame:
    """-> columns [sequence key, (position: events seen, with all_positions), rank (1 = best), item id, score];
    exclude_seen None: as the run evaluated."""
    model, config = run_dir.load_model(run)
    exclude_seen = config.train.exclude_seen if exclude_seen is None else exclude_seen
    data = Path(run) / run_dir.DATA
    transform = request_transform.load(data)
    key = transform["sequence_key"]  # a session-aware model answers each user's current session: by user
    if model.history is not None and not transform.get("history"):
        raise ValueError(f"run {run}: the model reads a user's earlier sessions and its prepared data's request-time transform "
                         "has no history (prepared before serving compiled it); prepare the data again")
    key = transform["history"]["user_column"] if model.history is not None else key
    if key not in events.columns:
        raise ValueError(f"events: expected the {'user' if model.history is not None else 'sequence key'} column {key!r}, "
                         f"got columns {list(events.columns)}")
    vocabulary = prepared.item_vocabulary(data)
    sessions = events[key].drop_duplicates().to_numpy()
    parts = []
    for first in range(0, len(sessions), sessions_per_chunk):
        chunk = events[events[key].isin(sessions[first:first + sessions_per_chunk])]
        if all_positions:
            keys, session, seen, best, scores = top_items_every_position(run, chunk, k, exclude_seen, model)
            keys, positions = keys[session], {"position": np.repeat(seen, [len(codes) for codes in best])}
        else:
            (keys, best, scores), positions = top_items(run, chunk, k, exclude_seen, model), {}
        parts.append(pd.DataFrame({
            key: np.repeat(keys, [len(codes) for codes in best]),
            **positions,
            "rank": np.concatenate([np.arange(1, len(codes) + 1) for codes in best]),
            "item_id": vocabulary.reindex(np.concatenate(best)).to_numpy(),
            "score": np.concatenate(scores).astype(float),
        }))
        progress(min(first + sessions_per_chunk, len(sessions)), len(sessions))
    columns = [key, *(["position"] if all_positions else []), "rank", "item_id", "score"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _progress_printer():
    """predict's progress callback (sessions done, total) shown as every command shows progress."""
    shown: list[Progress] = []

    def show(done: int, total: int) -> None:
        if not shown:
            shown.append(Progress("predict", total, "sessions"))
        shown[0].update(done - shown[0].done)
        if done == total:
            shown[0].close()
    return show


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m training.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory written by training.train")
    parser.add_argument("--events", type=Path, required=True, help="raw events (the run's column names unless --mapping)")
    parser.add_argument("--mapping", type=Path, help="YAML/JSON role -> column mapping of EVENTS, as training.prepare takes it")
    parser.add_argument("--k", type=int, default=20, help="items per session")
    parser.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                        help="leave out the session's own items (default: the run's train.exclude_seen)")
    parser.add_argument("--all-positions", action="store_true",
                        help="the answer after every event of each session (column position: events seen, 1..n)")
    parser.add_argument("--out", type=Path, required=True, help="predictions, .parquet or .csv")
    parser.add_argument("--sessions-per-chunk", type=int, default=256, help="sessions scored at once (bounds memory)")
    args = parser.parse_args(argv)
    keep_freed_memory()
    warnings.simplefilter("ignore", UserWarning)
    try:
        if args.out.suffix not in FORMATS:
            raise ValueError(f"--out {args.out}: expected a {' or '.join(FORMATS)} file, got {args.out.suffix or 'no suffix'!r}")
        for option, value in (("--k", args.k), ("--sessions-per-chunk", args.sessions_per_chunk)):
            if value < 1:
                raise ValueError(f"{option}: expected >= 1, got {value}")
        events, own_key = read_events(args.events), None
        if args.mapping is not None:
            events, own_key = in_run_columns(events, args.mapping, Path(args.run) / run_dir.DATA, f"--events {args.events}")
        predictions = predict(args.run, events, args.k, args.exclude_seen, args.sessions_per_chunk, _progress_printer(),
                              args.all_positions)
        if own_key is not None:  # sessions under the events' own name
            predictions = predictions.rename(columns={predictions.columns[0]: own_key})
    except (FileNotFoundError, ValueError, KeyError) as error:
        cli.refuse("predict", error)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write = (lambda tmp: predictions.to_parquet(tmp, index=False)) if args.out.suffix == ".parquet" else \
        (lambda tmp: predictions.to_csv(tmp, index=False))
    replace_file(args.out, write)
    print(f"predict: {predictions.iloc[:, 0].nunique()} sessions, k={args.k}, wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
