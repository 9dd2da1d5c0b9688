"""Benchmark: the session protocol's evaluation of a saved run (every next event of a split, ranked
over the whole catalog), as `python -m training.evaluate --protocol all` runs it.

    python -m bench.eval_speed --run RUN [--split valid] [--repeats 3]
        [--code OLD_CHECKOUT --code .]   # the same command from two versions of training/, alternated in one run

Prints each version's median wall time with the command's CPU time (user and system) and minor
page faults, and the ratio of the medians; writes bench/results/eval_speed.json.
Not a test: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.output import write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def measure(code: Path, run: Path, split: str) -> dict:
    """One evaluation by `code`'s training package in a fresh process: wall, CPU and faults."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [sys.executable, "-m", "training.evaluate", "--run", str(run), "--split", split, "--protocol", "all"]
    completed = subprocess.run(command, cwd=code, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(code)})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"eval_speed: {code}: {(completed.stderr.strip().splitlines() or ['failed without a message'])[-1]}")
    return {"code": str(code), "wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
            "system_s": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a training run folder (training.train --out)")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--code", action="append", type=Path, default=[],
                        help="a checkout whose training/ is measured (repeatable: runs alternate between them); default this one")
    args = parser.parse_args(argv)
    codes = [code.resolve() for code in args.code] or [ROOT]
    rows = []
    for repeat in range(args.repeats):
        for code in codes:
            print(f"{repeat + 1}/{args.repeats} {code.name}: evaluating {args.run} ({args.split}, every position) ...", flush=True)
            row = measure(code, args.run.resolve(), args.split)
            rows.append(row)
            print(f"{repeat + 1}/{args.repeats} {code.name:10s} {row['wall_s']:7.1f} s wall  {row['user_s']:7.1f} user  "
                  f"{row['system_s']:6.1f} system  {row['minor_faults']:>11,} faults", flush=True)
    medians = {}
    for code in codes:
        mine = [row for row in rows if row["code"] == str(code)]
        medians[str(code)] = {key: statistics.median(row[key] for row in mine) for key in ("wall_s", "user_s", "system_s", "minor_faults")}
        m = medians[str(code)]
        print(f"median {code.name:10s} {m['wall_s']:7.1f} s wall  {m['user_s']:7.1f} user  {m['system_s']:6.1f} system  "
              f"{m['minor_faults']:>11,.0f} faults")
    if len(codes) == 2:
        first, second = (medians[str(code)]["wall_s"] for code in codes)
        print(f"wall time {codes[1].name} / {codes[0].name}: {second / first:.2f}")
    write_json(RESULTS / "eval_speed.json", {"run": str(args.run), "split": args.split, "runs": rows, "medians": medians})


if __name__ == "__main__":
    main()
