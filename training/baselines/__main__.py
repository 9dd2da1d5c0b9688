"""python -m training.baselines: score the classic baselines on a prepared split (one JSON line each)."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from training import cli
from training.allocator import keep_freed_memory
from training.baselines import BASELINES, BY_RECENCY, baseline_names, fit_baseline, session_start_times
from training.batches import SequenceData
from training.evaluate import PROTOCOLS, evaluate_scores
from training.model.features import feature_spec


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m training.baselines", description=__doc__.split(": ", 1)[1])
    parser.add_argument("--data", type=Path, required=True, help="prepared folder (training.prepare --out)")
    parser.add_argument("--split", default="test", help="split to score (fitted on train)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="last", help="last: each row's final event; all: every next event")
    parser.add_argument("--exclude-seen", action="store_true", help="drop the sequence's own items from the ranking")
    parser.add_argument("--baselines", default=",".join(BASELINES), help=f"comma-separated, of {list(BASELINES)}")
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        names = baseline_names(args.baselines)
    except ValueError as error:
        cli.refuse("baselines", error)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            spec = feature_spec(args.data)
        train, data = SequenceData(args.data, "train", spec), SequenceData(args.data, args.split, spec)
        times = session_start_times(args.data, train) if BY_RECENCY & set(names) else None
    except (FileNotFoundError, ValueError) as error:
        cli.refuse("baselines", error)
    rows = len(data.prefixes()) if args.protocol == "all" else len(data)
    for name in names:
        started = time.perf_counter()
        scorer = fit_baseline(name, train, times)
        fitted = time.perf_counter()
        metrics = evaluate_scores(scorer, data, (5, 10, 20), args.exclude_seen, protocol=args.protocol, progress=f"baselines: {name}")
        print(json.dumps({"baseline": name, "split": args.split, "protocol": args.protocol, "rows": rows,
                          "fit_s": round(fitted - started, 2), "score_s": round(time.perf_counter() - fitted, 2),
                          **{key: round(value, 5) for key, value in metrics.items()}}), flush=True)


if __name__ == "__main__":
    main()
