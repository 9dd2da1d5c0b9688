"""Benchmark: training throughput (sequences/s) and peak memory per shipped config, at
d_model 64 and 128 and max length 200, each measured in its own process.

    python -m bench.train_speed --data build/demo/data [--steps 10] [--amp none,bf16] [--configs gpt2_clm,bert_mlm]
        [--code OLD_CHECKOUT --code .]   # the same measurements of two versions of training/, alternated in one run

Prints sequences/s over the measured steps (all their sequences over all their time, after
warm-up steps) with the process's CPU time (user and system) and minor page faults over those steps, on the epoch's real batches of mixed lengths, bucketed as training buckets them
(a median of per-step rates would overstate it: short batches are fast, long ones dominate the
time); writes bench/results/train_speed.json.
Not a test: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.output import write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def measure(config_file: Path, data: Path, d_model: int, amp: str, steps: int, warmup: int, batch_size: int,
            extra: tuple[str, ...] = (), max_length: int = 200) -> dict:
    """Runs inside a fresh process: returns throughput (batch building included) and this
    process's peak RSS. `extra`: more section.key=value overrides."""
    import warnings

    from training.config import load_config
    from training.train import Trainer

    warnings.simplefilter("ignore")
    overrides = [f"model.d_model={d_model}", f"model.max_length={max_length}", f"train.amp={amp}", f"train.batch_size={batch_size}", *extra]
    config = load_config(config_file, overrides)
    trainer = Trainer(config, data, Path("/nonexistent-bench-run"))
    batches = trainer.epoch_batches()
    trainer.model.train()
    sequences, seconds, user, system, faults = 0, 0.0, 0.0, 0.0, 0
    started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for index, batch in zip(range(warmup + steps), batches):
        trainer.train_step(batch)
        now, after = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        if index >= warmup:
            sequences += len(batch[trainer.spec.item])
            seconds += now - started
            user, system = user + after.ru_utime - usage.ru_utime, system + after.ru_stime - usage.ru_stime
            faults += after.ru_minflt - usage.ru_minflt
        started, usage = now, after
    return {"sequences_per_s": sequences / seconds, "cpu_s_per_1000_sequences": 1000 * (user + system) / sequences,
            "system_share": system / max(user + system, 1e-9), "minor_faults_per_step": faults / steps,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters": sum(p.numel() for p in trainer.model.parameters())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "demo" / "data")
    parser.add_argument("--configs", default="", help="comma-separated config names (default: all shipped)")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--amp", default="none,bf16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides, repeatable")
    parser.add_argument("--code", action="append", type=Path, default=[],
                        help="a checkout whose training/ is measured (repeatable: measurements alternate between them); default this one")
    parser.add_argument("--max-length", type=int, default=200)
    parser.add_argument("--one", nargs=3, metavar=("CONFIG", "D_MODEL", "AMP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        config, d_model, amp = args.one
        print(json.dumps(measure(Path(config), args.data, int(d_model), amp, args.steps, args.warmup, args.batch_size, tuple(args.set),
                                 args.max_length)))
        return
    codes = [code.resolve() for code in args.code] or [ROOT]
    from training.config import shipped_configs

    names = [n for n in args.configs.split(",") if n] or [p.stem for p in shipped_configs()]
    rows = []
    for name in names:
        for d_model in (int(s) for s in args.sizes.split(",")):
            for amp in args.amp.split(","):
                for code in codes:
                    # this file's measuring code over `code`'s training package (-P: no script folder on sys.path)
                    command = [sys.executable, "-P", str(Path(__file__).resolve()), "--data", str(args.data.resolve()),
                               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
                               "--max-length", str(args.max_length), *(f"--set={o}" for o in args.set),
                               "--one", str(ROOT / "training" / "configs" / f"{name}.yaml"), str(d_model), amp]
                    completed = subprocess.run(command, cwd=code, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(code)})
                    if completed.returncode != 0:
                        raise SystemExit(f"{name} d={d_model} {amp}: {completed.stderr[-2000:]}")
                    row = {"config": name, "d_model": d_model, "amp": amp, "code": str(code),
                           **json.loads(completed.stdout.strip().splitlines()[-1])}
                    rows.append(row)
                    print(f"{name:14s} d={d_model:<4d} {amp:5s} {row['sequences_per_s']:8.1f} seq/s  {row['cpu_s_per_1000_sequences']:6.2f} CPU-s/1000 seq"
                          f"  system {row['system_share']:4.0%}  {row['minor_faults_per_step']:9.0f} faults/step  peak {row['peak_rss_mib']:7.0f} MiB"
                          f"  {code.name if len(codes) > 1 else ''}", flush=True)
    write_json(RESULTS / "train_speed.json", rows)


if __name__ == "__main__":
    main()
