"""Benchmark: hf4rec next to Transformers4Rec 23.12 on the same prepared data, the same model
sizes and the same CPU time budget, both scored by hf4rec's metric code on the same test users.

    make bench-t4r-env          # once: builds the peer venv .venv-t4r
    .venv/bin/python -m bench.compare_t4r --data build/demo/data --minutes 25 [--pairs gpt2:clm,xlnet:mlm]
    .venv/bin/python -m bench.compare_t4r --speed-rounds 5 --amp bf16   # throughput only, side by side

Item ids only (no side information), d_model 64, 2 layers, 2 heads, max length 200, batch 128,
run one after the other (never concurrently: the machine has 2 cores). Metrics follow the
standard ML-1M protocol of the published SASRec/BERT4Rec/gSASRec figures: the items already in
the sequence are excluded from the ranking (a user rates a movie once); `all_items_ndcg@10`
ranks them too. Prints one table and
writes bench/results/compare_t4r.json. Not a test: it measures.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

from bench.accuracy import PROTOCOL

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEER_PYTHON = ROOT / ".venv-t4r" / "bin" / "python"
WARMUP_STEPS = 3  # --speed-rounds: steps of each burst before timing starts


def side_features(data: Path) -> list[str]:
    from training.features import feature_spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = feature_spec(data)
    return [*spec.categorical, *spec.continuous, *spec.context_columns]


def fresh(out: Path) -> Path:
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    return out


def same_setting(data: Path, args) -> list[str]:
    """hf4rec overrides for the setting both libraries share: item ids only, the same sizes."""
    return [f"model.exclude_features={json.dumps(side_features(data))}", f"model.d_model={args.d_model}", "model.n_layers=2",
            "model.n_heads=2", "model.max_length=200", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}"]


def run_hf4rec(data: Path, architecture: str, task: str, minutes: float, out: Path, args) -> dict:
    fresh(out)
    command = [
        sys.executable, "-m", "training.train", "--config", str(ROOT / "training" / "configs" / f"{architecture}_{task}.yaml"),
        "--data", str(data), "--out", str(out), *same_setting(data, args), f"train.time_budget_minutes={minutes}",
        "train.epochs=1000", f"train.eval_every_epochs={args.eval_every}", "train.patience=0", f"train.amp={args.amp}",
        *PROTOCOL,  # all_items_* below rank the seen items too
    ]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    result = json.loads((out / "metrics.json").read_text())
    all_items = subprocess.run([sys.executable, "-m", "training.evaluate", "--run", str(out), "--no-exclude-seen"],
                               cwd=ROOT, check=True, capture_output=True, text=True).stdout
    test = {**result["test"], **{f"all_items_{k}": v for k, v in json.loads(all_items).items() if "@" in k}}
    return {"library": "hf4rec", "train_samples_per_second": result["train_sequences_per_s"],
            "steps": result["steps"], "train_seconds": result["train_seconds"], "test": test}


def run_t4r(data: Path, architecture: str, task: str, minutes: float, out: Path, args) -> dict:
    if not PEER_PYTHON.exists():
        raise SystemExit(f"{PEER_PYTHON} not found: run `make bench-t4r-env` first")
    command = [str(PEER_PYTHON), str(ROOT / "bench" / "t4r" / "train_t4r.py"), "--data", str(data), "--architecture", architecture,
               "--task", task, "--d-model", str(args.d_model), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--minutes", str(minutes), "--out", str(fresh(out))]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def speed_hf4rec(data: Path, architecture: str, task: str, args) -> float:
    config = ROOT / "training" / "configs" / f"{architecture}_{task}.yaml"
    command = [sys.executable, "-m", "bench.train_speed", "--data", str(data), "--steps", str(args.speed_steps),
               "--warmup", str(WARMUP_STEPS), "--batch-size", str(args.batch_size), *(f"--set={o}" for o in same_setting(data, args)),
               "--one", str(config), str(args.d_model), args.amp]
    completed = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])["sequences_per_s"]


def speed_t4r(data: Path, architecture: str, task: str, args) -> float:
    out = args.work / f"t4r_{architecture}_{task}_speed.json"
    command = [str(PEER_PYTHON), str(ROOT / "bench" / "t4r" / "train_t4r.py"), "--data", str(data), "--architecture", architecture,
               "--task", task, "--d-model", str(args.d_model), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--speed-steps", str(args.speed_steps), "--warmup-steps", str(WARMUP_STEPS), "--out", str(fresh(out))]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())["sequences_per_s"]


def compare_speed(args) -> None:
    """Training throughput only: short bursts of each library in turn, round after round, so both
    see the same machine weather; medians over rounds, and the median of the per-round ratios."""
    rows = []
    for pair in args.pairs.split(","):
        architecture, task = pair.split(":")
        ours, theirs = [], []
        for _ in range(args.speed_rounds):
            ours.append(speed_hf4rec(args.data, architecture, task, args))
            theirs.append(speed_t4r(args.data, architecture, task, args))
        row = {"pair": pair, "hf4rec_seq_per_s": [round(v, 1) for v in ours], "t4r_seq_per_s": [round(v, 1) for v in theirs],
               "hf4rec_median": round(statistics.median(ours), 1), "t4r_median": round(statistics.median(theirs), 1),
               "median_ratio": round(statistics.median(a / b for a, b in zip(ours, theirs)), 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare_t4r_speed.json").write_text(json.dumps(rows, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "demo" / "data")
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget of each run")
    parser.add_argument("--pairs", default="gpt2:clm,xlnet:mlm", help="architecture:task pairs")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--amp", default="none", help="hf4rec's train.amp (T4R runs in float32)")
    parser.add_argument("--eval-every", type=int, default=5, help="hf4rec validation cadence in epochs")
    parser.add_argument("--libraries", default="hf4rec,t4r", help="which sides to run now; the table also shows earlier results in --work")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench" / "compare_t4r")
    parser.add_argument("--speed-rounds", type=int, default=0,
                        help="only throughput: this many alternating rounds of --speed-steps steps per library")
    parser.add_argument("--speed-steps", type=int, default=30, help=f"measured steps per round (after {WARMUP_STEPS} warm-up steps)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.speed_rounds:
        if not PEER_PYTHON.exists():
            raise SystemExit(f"{PEER_PYTHON} not found: run `make bench-t4r-env` first")
        return compare_speed(args)
    runners = {"hf4rec": run_hf4rec, "t4r": run_t4r}
    wanted = args.libraries.split(",")
    if not set(wanted) <= set(runners):
        raise SystemExit(f"--libraries: expected names from {list(runners)}, got {args.libraries!r}")
    rows = []
    for pair in args.pairs.split(","):
        architecture, task = pair.split(":")
        stem = f"{architecture}_{task}"
        for library, run in runners.items():
            out = args.work / f"{library}_{stem}.json"
            if library in wanted:
                result = run(args.data, architecture, task, args.minutes, args.work / f"{library}_{stem}", args)
                out.write_text(json.dumps(result))
            elif out.exists():
                result = json.loads(out.read_text())
            else:
                continue
            row = {"pair": pair, "library": result["library"], "samples_per_s": round(result["train_samples_per_second"], 1),
                   "train_seconds": round(result["train_seconds"]), "ndcg@10": round(result["test"]["ndcg@10"], 4),
                   "hr@10": round(result["test"]["hr@10"], 4),
                   "all_items_ndcg@10": round(result["test"].get("all_items_ndcg@10", float("nan")), 4)}
            if "t4r_ndcg@10" in result["test"]:
                row["t4r_metric_ndcg@10_unmasked"] = round(result["test"]["t4r_ndcg@10"], 4)
                row["our_metric_ndcg@10_unmasked"] = round(result["test"]["unmasked_ndcg@10"], 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare_t4r.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
