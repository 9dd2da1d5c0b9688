"""Benchmark: fit + transform of the prepare workflow on 1M synthetic events, hf4rec's workflow
next to the same features through NVTabular's stock Groupby + ListSlice, interleaved in one run.

    python -m bench.prepare_speed [--events 1000000] [--repeats 3] [--reference-repeats 3]

Prints medians (this machine's cores are shared and noisy) and the ratio; writes
bench/results/prepare_speed.json. Not a test: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import training  # noqa: F401  (first: silences Merlin's CPU-mode warnings)
import nvtabular as nvt
from bench.output import write_json
from training.data.datasets.synthetic import COLUMNS, SyntheticConfig, generate_events
from training.data.workflow import WorkflowOptions, build_workflow, fit_workflow

RESULTS = Path(__file__).resolve().parent / "results"
MAX_LENGTH = 50


def stock_workflow(categories: Path) -> nvt.Workflow:
    """The same outputs with NVTabular's own ops only (what a Merlin user would write)."""
    categorify = dict(out_path=str(categories), dtype="int64")
    items = ["item_id"] >> nvt.ops.Categorify(**categorify)
    cats = ["category"] >> nvt.ops.Categorify(**categorify)
    price = ["price"] >> nvt.ops.FillMedian() >> nvt.ops.LogOp() >> nvt.ops.Normalize()
    context = ["user_id", "device"] >> nvt.ops.Categorify(**categorify)
    grouped = (items + cats + price + context + ["session_id", "timestamp"]) >> nvt.ops.Groupby(
        groupby_cols=["session_id"],
        sort_cols=["timestamp"],
        aggs={"item_id": ["list"], "category": ["list"], "price": ["list"], "timestamp": ["first"],
              "user_id": ["first"], "device": ["first"]},
        name_sep="_",
    )
    lists = grouped[["item_id_list", "category_list", "price_list"]] >> nvt.ops.ListSlice(-MAX_LENGTH)
    return nvt.Workflow(grouped[["session_id"]] + lists + grouped[["timestamp_first", "user_id_first", "device_first"]])


def hf4rec_workflow(categories: Path) -> nvt.Workflow:
    return build_workflow(COLUMNS, WorkflowOptions(sequence_key="session_id", max_length=MAX_LENGTH), categories)


def at_least(n_events: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic events cut at the first session boundary past n_events."""
    config = SyntheticConfig(n_events=int(n_events * 1.02), n_items=20_000, n_users=50_000, seed=seed)
    events = generate_events(config)
    last_session = events["session_id"].iloc[n_events - 1]
    return events[events["session_id"] <= last_session]


def time_fit_transform(make_workflow, events: pd.DataFrame) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        workflow = make_workflow(Path(folder))
        started = time.perf_counter()
        fit_workflow(workflow, events)
        fitted = time.perf_counter()
        sequences = workflow.transform(events)
        done = time.perf_counter()
    return {"fit_s": fitted - started, "transform_s": done - fitted, "total_s": done - started, "sequences": sequences}


def median_of(runs: list[dict], key: str) -> float:
    return round(statistics.median(run[key] for run in runs), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-repeats", type=int, default=3, help="0 skips the stock NVTabular run")
    args = parser.parse_args(argv)
    events = at_least(args.events)
    print(f"{len(events):,} synthetic events, {events['session_id'].nunique():,} sessions, {events['item_id'].nunique():,} items")
    ours, stock = [], []
    for repeat in range(max(args.repeats, args.reference_repeats)):
        if repeat < args.repeats:
            ours.append(time_fit_transform(hf4rec_workflow, events))
            print(f"  hf4rec       run {repeat + 1}: fit {ours[-1]['fit_s']:.2f} s, transform {ours[-1]['transform_s']:.2f} s", flush=True)
        if repeat < args.reference_repeats:
            stock.append(time_fit_transform(stock_workflow, events))
            print(f"  NVTabular    run {repeat + 1}: fit {stock[-1]['fit_s']:.2f} s, transform {stock[-1]['transform_s']:.2f} s", flush=True)
    result = {"events": len(events), "hf4rec": {k: median_of(ours, k) for k in ("fit_s", "transform_s", "total_s")}}
    if stock:
        same = all(
            np.array_equal(a, b) for a, b in zip(stock[0]["sequences"]["item_id_list"], ours[0]["sequences"]["item_id_list"])
        ) and len(stock[0]["sequences"]) == len(ours[0]["sequences"])
        if not same:
            raise SystemExit("the two workflows disagree on the item sequences: the comparison is void")
        result["nvtabular_stock"] = {k: median_of(stock, k) for k in ("fit_s", "transform_s", "total_s")}
        result["speedup"] = round(result["nvtabular_stock"]["total_s"] / result["hf4rec"]["total_s"], 1)
    print(json.dumps(result, indent=1))
    write_json(RESULTS / "prepare_speed.json", result)


if __name__ == "__main__":
    main()
