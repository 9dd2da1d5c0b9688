"""Offline top-k recommendations for your own events, as the served ensemble answers them.

    python -m training.predict --run RUN --events EVENTS.parquet|csv [--k 20] [--[no-]exclude-seen]
        --out PREDICTIONS.parquet|csv

Each session (the run's sequence key) of EVENTS gets its k best ORIGINAL item ids and scores,
best first (ties to the lower item code), through the same request-time transform (plain data,
no pickle) and model as the served ensemble. Sessions go through in chunks, so memory stays
bounded by the chunk's [sessions, catalog] scores. One row per (session, rank).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from training import prepared, request_transform, run_dir
from training.recommend import top_items

FORMATS = (".parquet", ".csv")
PROGRESS_SECONDS = 5.0  # a progress line this often when the output is not a terminal


def read_events(path: Path) -> pd.DataFrame:
    if path.suffix not in FORMATS:
        raise ValueError(f"--events {path}: expected a {' or '.join(FORMATS)} file, got {path.suffix or 'no suffix'!r}")
    if not path.is_file():
        raise FileNotFoundError(f"--events {path}: no such file")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def predict(run: Path, events: pd.DataFrame, k: int, exclude_seen: bool | None = None, sessions_per_chunk: int = 256,
            progress=lambda done, total: None) -> pd.DataFrame:
    """-> columns [sequence key, rank (1 = best), item id, score]; exclude_seen None: as the run evaluated."""
    model, config = run_dir.load_model(run)
    exclude_seen = config.train.exclude_seen if exclude_seen is None else exclude_seen
    data = Path(run) / run_dir.DATA
    key = request_transform.load(data)["sequence_key"]
    if key not in events.columns:
        raise ValueError(f"events: expected the sequence key column {key!r}, got columns {list(events.columns)}")
    vocabulary = prepared.item_vocabulary(data)
    sessions = events[key].drop_duplicates().to_numpy()
    parts = []
    for first in range(0, len(sessions), sessions_per_chunk):
        chunk = events[events[key].isin(sessions[first:first + sessions_per_chunk])]
        keys, best, scores = top_items(run, chunk, k, exclude_seen, model)
        parts.append(pd.DataFrame({
            key: np.repeat(keys, [len(codes) for codes in best]),
            "rank": np.concatenate([np.arange(1, len(codes) + 1) for codes in best]),
            "item_id": vocabulary.reindex(np.concatenate(best)).to_numpy(),
            "score": np.concatenate(scores).astype(float),
        }))
        progress(min(first + sessions_per_chunk, len(sessions)), len(sessions))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[key, "rank", "item_id", "score"])


def _progress_printer():
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if sys.stderr.isatty() or now - last[0] >= PROGRESS_SECONDS or done == total:
            end = "\n" if done == total or not sys.stderr.isatty() else "\r"
            print(f"predict: {done}/{total} sessions", end=end, file=sys.stderr, flush=True)
            last[0] = now
    return show


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory written by training.train")
    parser.add_argument("--events", type=Path, required=True, help="raw events with the prepared data's columns")
    parser.add_argument("--k", type=int, default=20, help="items per session")
    parser.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                        help="leave out the session's own items (default: the run's train.exclude_seen)")
    parser.add_argument("--out", type=Path, required=True, help="predictions, .parquet or .csv")
    parser.add_argument("--sessions-per-chunk", type=int, default=256, help="sessions scored at once (bounds memory)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    try:
        if args.out.suffix not in FORMATS:
            raise ValueError(f"--out {args.out}: expected a {' or '.join(FORMATS)} file, got {args.out.suffix or 'no suffix'!r}")
        for name in ("k", "sessions_per_chunk"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
        predictions = predict(args.run, read_events(args.events), args.k, args.exclude_seen, args.sessions_per_chunk,
                              _progress_printer())
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise SystemExit(f"predict: {error}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write = (lambda tmp: predictions.to_parquet(tmp, index=False)) if args.out.suffix == ".parquet" else \
        (lambda tmp: predictions.to_csv(tmp, index=False))
    run_dir.replace_file(args.out, write)
    print(f"predict: {predictions.iloc[:, 0].nunique()} sessions, k={args.k}, wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
