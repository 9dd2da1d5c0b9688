"""Benchmark: hf4rec next to Transformers4Rec 23.12 on the same prepared data, the same model
sizes and the same CPU time budget, both scored by hf4rec's metric code on the same test users.

    make bench-t4r-env          # once: builds the peer venv .venv-t4r
    .venv/bin/python -m bench.compare_t4r --data build/demo/data --minutes 25 [--pairs gpt2:clm,xlnet:mlm]
    .venv/bin/python -m bench.compare_t4r --speed-rounds 5 --amp bf16   # throughput only, side by side

Item ids only (no side information), d_model 64, 2 layers, 2 heads, max length 200, batch 128,
run one after the other (never concurrently: the machine has 2 cores). Both sides do the same
work under the same definitions (bench/t4r/definitions.py): hf4rec's AdamW settings, warmup then
cosine decay to the end of the time budget, the last weights scored, and the same clock (wall
and process CPU seconds inside training epochs). What still differs is printed in each row
(`differs`: precision when --amp is not none; T4R runs float32). Each result records its
settings; a result of a library not run now is reused only when they equal this run's, else
the run stops before training, naming the file and the settings that differ. Metrics follow the
standard ML-1M protocol of the published SASRec/BERT4Rec/gSASRec figures: the items already in
the sequence are excluded from the ranking (a user rates a movie once); `all_items_ndcg@10`
ranks them too. Prints one table and
writes bench/results/compare_t4r.json. Not a test: it measures. (--speed-rounds: steps timed end
to end after warm-up steps on both sides, wall clock only.)
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
from bench.output import write_json
from bench.t4r.definitions import SCHEDULE, TIMING, WARMUP_STEPS, WEIGHTS
from bench.t4r.train_hf4rec import ran_with
from training.files import replace_file

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEER_PYTHON = ROOT / ".venv-t4r" / "bin" / "python"
SPEED_WARMUP_STEPS = 3  # --speed-rounds: steps of each burst before timing starts
EPOCHS = 1000  # more than any time budget allows: the budget ends every run


def side_features(data: Path) -> list[str]:
    from training.model.features import feature_spec

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


def config_file(architecture: str, task: str) -> Path:
    return ROOT / "training" / "configs" / f"{architecture}_{task}.yaml"


def budgeted(data: Path, args) -> list[str]:
    """hf4rec overrides of a compared run: the shared setting, the shared schedule and weights, the budget."""
    return [*same_setting(data, args), f"train.time_budget_minutes={args.minutes}", f"train.epochs={EPOCHS}",
            f"train.schedule={SCHEDULE}", f"train.warmup_steps={WARMUP_STEPS}", "train.patience=0",
            f"train.eval_every_epochs={EPOCHS}",  # validated once, when the budget ends: the last weights are kept
            *PROTOCOL]  # all_items_* rank the seen items too


def expected_settings(data: Path, architecture: str, task: str, args) -> dict:
    """The settings both sides of one pair must record: hf4rec's config as this run resolves it."""
    from training.config import load_config

    return ran_with(load_config(config_file(architecture, task), budgeted(data, args)), data)


def checked(path: Path, result: dict, expected: dict) -> dict:
    """`result` when the settings it records are `expected`; else stop, naming what differs."""
    found = result.get("settings")
    if not isinstance(found, dict):
        raise SystemExit(f"compare_t4r: {path}: records no settings, expected {expected}; rerun it (--libraries)")
    differing = sorted(key for key in {*expected, *found} if expected.get(key) != found.get(key))
    if differing:
        raise SystemExit(f"compare_t4r: {path}: settings differ from this run's (key: expected, found): "
                         + "; ".join(f"{key}: {expected.get(key)!r}, {found.get(key)!r}" for key in differing)
                         + "; rerun it (--libraries)")
    return result


def run_hf4rec(data: Path, architecture: str, task: str, out: Path, args) -> dict:
    """Trains into `out` (a run directory); the result JSON is written whole at `out`.json."""
    result = out.with_suffix(".json")

    def train(tmp: Path) -> None:
        subprocess.run([sys.executable, "-m", "bench.t4r.train_hf4rec", "--config", str(config_file(architecture, task)),
                        "--data", str(data), "--run", str(fresh(out)), "--out", str(tmp), *budgeted(data, args),
                        f"train.amp={args.amp}"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)

    replace_file(result, train)
    return json.loads(result.read_text())


def run_t4r(data: Path, architecture: str, task: str, out: Path, args) -> dict:
    if not PEER_PYTHON.exists():
        raise SystemExit(f"{PEER_PYTHON} not found: run `make bench-t4r-env` first")
    result, same = out.with_suffix(".json"), expected_settings(data, architecture, task, args)
    command = [str(PEER_PYTHON), str(ROOT / "bench" / "t4r" / "train_t4r.py"), "--data", str(data), "--architecture", architecture,
               "--task", task, "--d-model", str(same["d_model"]), "--layers", str(same["n_layers"]), "--heads", str(same["n_heads"]),
               "--max-length", str(same["max_length"]), "--batch-size", str(same["batch_size"]), "--lr", str(same["lr"]),
               "--weight-decay", str(same["weight_decay"]), "--betas", *(str(b) for b in same["betas"]),
               "--clip-grad", str(same["clip_grad"]), "--schedule", same["schedule"], "--warmup-steps", str(same["warmup_steps"]),
               "--epochs", str(EPOCHS), "--minutes", str(same["minutes"])]
    replace_file(result, lambda tmp: subprocess.run([*command, "--out", str(tmp)], cwd=ROOT, check=True,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return json.loads(result.read_text())


def speed_hf4rec(data: Path, architecture: str, task: str, args) -> float:
    config = ROOT / "training" / "configs" / f"{architecture}_{task}.yaml"
    command = [sys.executable, "-m", "bench.train_speed", "--data", str(data), "--steps", str(args.speed_steps),
               "--warmup", str(SPEED_WARMUP_STEPS), "--batch-size", str(args.batch_size), *(f"--set={o}" for o in same_setting(data, args)),
               "--one", str(config), str(args.d_model), args.amp]
    completed = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])["sequences_per_s"]


def speed_t4r(data: Path, architecture: str, task: str, args) -> float:
    out = args.work / f"t4r_{architecture}_{task}_speed.json"
    command = [str(PEER_PYTHON), str(ROOT / "bench" / "t4r" / "train_t4r.py"), "--data", str(data), "--architecture", architecture,
               "--task", task, "--d-model", str(args.d_model), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--speed-steps", str(args.speed_steps), "--warmup-timing-steps", str(SPEED_WARMUP_STEPS)]
    replace_file(out, lambda tmp: subprocess.run([*command, "--out", str(tmp)], cwd=ROOT, check=True,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
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
    write_json(RESULTS / "compare_t4r_speed.json", rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "demo" / "data")
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget of each run")
    parser.add_argument("--pairs", default="gpt2:clm,xlnet:mlm", help="architecture:task pairs")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--amp", default="none", help="hf4rec's train.amp (T4R runs in float32)")
    parser.add_argument("--libraries", default="hf4rec,t4r", help="which sides to run now; the table also shows earlier results in --work")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench" / "compare_t4r")
    parser.add_argument("--speed-rounds", type=int, default=0,
                        help="only throughput: this many alternating rounds of --speed-steps steps per library")
    parser.add_argument("--speed-steps", type=int, default=30, help=f"measured steps per round (after {SPEED_WARMUP_STEPS} warm-up steps)")
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
    plan = []  # (pair, library, result path, expected settings, earlier result or None: run it now)
    for pair in args.pairs.split(","):
        architecture, task = pair.split(":")
        expected = expected_settings(args.data, architecture, task, args)
        for library in runners:
            path = args.work / f"{library}_{architecture}_{task}.json"
            if library in wanted:
                plan.append((pair, library, path, expected, None))
            elif path.exists():  # checked before anything trains: a stale result stops the run at once
                plan.append((pair, library, path, expected, checked(path, json.loads(path.read_text()), expected)))
    definitions = {"schedule": f"{SCHEDULE}, {WARMUP_STEPS} warm-up steps, decay to the end of the budget",
                   "weights": WEIGHTS, "timing": TIMING}
    print(json.dumps(definitions), flush=True)
    rows = []
    for pair, library, path, expected, result in plan:
        if result is None:
            architecture, task = pair.split(":")
            result = checked(path, runners[library](args.data, architecture, task, path.with_suffix(""), args), expected)
        rows.append(table_row(pair, result))
    for pair in dict.fromkeys(r["pair"] for r in rows):
        mine = [r for r in rows if r["pair"] == pair]
        differs = [name for name in ("precision",) if len({r[name] for r in mine}) > 1]
        for r in mine:
            r["differs"] = differs
            print(json.dumps(r), flush=True)
    write_json(RESULTS / "compare_t4r.json", {"definitions": definitions, "rows": rows})


def table_row(pair: str, result: dict) -> dict:
    """One table row: the same fields, under the same definitions, for either library."""
    test = result["test"]
    found = {"pair": pair, "library": result["library"], "precision": result["precision"],
             "sequences_per_wall_s": round(result["sequences_per_wall_s"], 1),
             "sequences_per_cpu_s": round(result["sequences_per_cpu_s"], 1),
             "train_wall_seconds": round(result["train_wall_seconds"]), "train_cpu_seconds": round(result["train_cpu_seconds"]),
             "steps": result["train_steps"], "ndcg@10": round(test["ndcg@10"], 4), "hr@10": round(test["hr@10"], 4),
             "all_items_ndcg@10": round(test.get("all_items_ndcg@10", float("nan")), 4)}
    if "t4r_ndcg@10" in test:
        found["t4r_metric_ndcg@10_unmasked"] = round(test["t4r_ndcg@10"], 4)
        found["our_metric_ndcg@10_unmasked"] = round(test["unmasked_ndcg@10"], 4)
    return found


if __name__ == "__main__":
    main()
