"""Benchmark: session-based accuracy of the classic baselines and Transformer configs on the same
prepared splits (fitted on train, scored on test), both protocols, one table.

    .venv/bin/python -m bench.sessions --data PREPARED --label NAME [--configs gpt2_session,...]
        [--budget-minutes 30] [--baselines most_popular,sequential_rules,session_knn,vstan] [--protocols all,last]
        [key=value ...]

A config may carry its own overrides: `--configs gpt2_session,gpt2_session+model.history=prefix`
compares the session-only model with the one reading the user's earlier sessions (data prepared
with --view session-aware).

`all`: every next event of every test session from its prefix (session-rec's and the
Transformers4Rec paper's protocol); `last`: each session's final event. HR, NDCG and MRR at 10 and
20 over the full training catalog (`--protocols last` for leave-one-out data such as ML-1M, whose
test rows are whole histories: there `all` would score the training events again), items of the session not excluded (repeats are real targets in
sessions) unless --exclude-seen. Each row carries its wall time and the CPU time of the processes
that did the work (fit + scoring for a baseline; training, then scoring, for a model), measured
in this one run. `key=value` arguments apply to every config. Runs go to --out/LABEL; the
table is written to bench/results/sessions_LABEL.json.
Not a test: it measures.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

from bench.output import write_json
from training.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "training" / "configs"
PROTOCOLS = ("all", "last")
KS = (10, 20)
METRICS = ("hr", "ndcg", "mrr")


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def score_protocols(score, protocols) -> dict:
    """{protocol: the table's metrics}; `score(protocol)` -> all metrics of the test split."""
    out = {}
    for protocol in protocols:
        metrics = score(protocol)
        out[protocol] = {f"{m}@{k}": metrics[f"{m}@{k}"] for m in METRICS for k in KS}
    return out


def run_baseline(name: str, data: Path, exclude_seen: bool, protocols) -> dict:
    from training.baselines import BY_RECENCY, fit_baseline, session_start_times
    from training.batches import SequenceData
    from training.evaluate import evaluate_scores
    from training.model.features import feature_spec

    spec = feature_spec(data)
    train, test = SequenceData(data, "train", spec), SequenceData(data, "test", spec)
    wall, cpu = time.perf_counter(), cpu_seconds()
    scorer = fit_baseline(name, train, session_start_times(data, train) if name in BY_RECENCY else None)
    fit_wall = time.perf_counter() - wall
    metrics = score_protocols(lambda protocol: evaluate_scores(scorer, test, KS, exclude_seen, 512, protocol), protocols)
    return {"name": name, "kind": "baseline", "fit_wall_s": round(fit_wall, 1), "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(cpu_seconds() - cpu, 1), **metrics}


def run_model(config: str, data: Path, out: Path, budget: float, overrides: list[str], exclude_seen: bool, protocols) -> dict:
    from training import run_dir
    from training.batches import SequenceData
    from training.evaluate import evaluate

    name, *own = config.split("+")  # a variant: CONFIG+section.key=value+...
    config_file = Path(name) if name.endswith(".yaml") else CONFIGS / f"{name}.yaml"
    label = "+".join([config_file.stem, *own])
    run = out / "".join(c if c.isalnum() or c in "._+-" else "-" for c in label)
    command = [sys.executable, "-m", "training.train", "--config", str(config_file), "--data", str(data), "--out", str(run),
               f"train.time_budget_minutes={budget}", *overrides, *own]
    wall, cpu = time.perf_counter(), cpu_seconds()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"sessions: training {label} failed: {completed.stderr[-2000:]}")
    train_wall, train_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    result = json.loads((run / "metrics.json").read_text())
    model, _ = run_dir.load_model(run)
    test = SequenceData(data, "test", model.spec)
    metrics = score_protocols(lambda protocol: evaluate(model, test, KS, exclude_seen, 512, protocol), protocols)
    return {"name": label, "kind": "model", "train_wall_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
            "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1),
            "epochs": result.get("epochs"), "best_epoch": result.get("best_epoch"), "overrides": overrides, **metrics}


def config_list(text: str) -> list[str]:
    """--configs split at commas outside brackets (an override may hold a list: key=[a,b])."""
    out, depth, current = [], 0, ""
    for char in text + ",":
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            out, current = out + [current] if current else out, ""
        else:
            current += char
    return out


def table(rows: list[dict], protocols=PROTOCOLS) -> str:
    header = ["name"] + [f"{p} {m.upper()}@{k}" for p in protocols for k in KS for m in METRICS] + ["wall s", "CPU s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["name"]] + [f"{row[p][f'{m}@{k}']:.4f}" for p in protocols for k in KS for m in METRICS]
        lines.append("| " + " | ".join(cells + [f"{row['wall_s']:.0f}", f"{row['cpu_s']:.0f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared folder with train, valid and test splits")
    parser.add_argument("--label", required=True, help="names the result file and the runs' folder")
    parser.add_argument("--configs", default="gpt2_session", help="comma-separated config names or YAML paths ('' for none), "
                        "each with its own overrides after '+' (gpt2_session+model.history=prefix)")
    parser.add_argument("--baselines", default="most_popular,sequential_rules,session_knn,vstan", help="comma-separated baseline names")
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="training time budget of each config")
    parser.add_argument("--exclude-seen", action="store_true", help="drop the session's own items from the ranking")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated, of: " + ", ".join(PROTOCOLS))
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "sessions")
    parser.add_argument("overrides", nargs="*", help="section.key=value for every config")
    args = parser.parse_args(argv)
    keep_freed_memory()
    from training.baselines import baseline_names

    try:
        baselines = baseline_names(args.baselines)
    except ValueError as error:
        raise SystemExit(f"sessions: {error}")
    protocols = [p for p in args.protocols.split(",") if p]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise SystemExit(f"sessions: --protocols: expected some of {', '.join(PROTOCOLS)}, got {args.protocols!r}")
    if not (args.data / "prepared.json").exists():
        raise SystemExit(f"sessions: --data: expected a prepared folder (training.prepare --out), got {args.data}")
    warnings.simplefilter("ignore", UserWarning)
    out = args.out / args.label
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"sessions: {out} exists and is not empty: choose another --label or remove it")
    rows = []
    for name in baselines:
        print(f"[sessions] baseline {name} ...", file=sys.stderr, flush=True)
        rows.append(run_baseline(name, args.data, args.exclude_seen, protocols))
        print(table(rows[-1:], protocols).splitlines()[-1], file=sys.stderr, flush=True)
    for config in config_list(args.configs):
        print(f"[sessions] training {config} for {args.budget_minutes} min ...", file=sys.stderr, flush=True)
        rows.append(run_model(config, args.data, out, args.budget_minutes, args.overrides, args.exclude_seen, protocols))
        print(table(rows[-1:], protocols).splitlines()[-1], file=sys.stderr, flush=True)
    write_json(ROOT / "bench" / "results" / f"sessions_{args.label}.json", {"data": str(args.data), "rows": rows})
    print(table(rows, protocols))


if __name__ == "__main__":
    main()
