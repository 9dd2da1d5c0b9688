"""Benchmark: next-item accuracy on a prepared folder (MovieLens-1M, leave-one-out, max length
200, full-catalog ranking of the items not yet in the sequence, as the published figures rank)
for the shipped architectures with and without side information.

    .venv/bin/python -m bench.accuracy --data build/demo/data [--only NAME,...] [--parallel N] [key=value ...]

Each variant is a shipped config plus overrides (VARIANTS below); `key=value` arguments apply to
every variant (e.g. train.time_budget_minutes=25 train.amp=bf16 on this CPU, train.device=cuda on
a GPU). Runs train with `python -m training.train`, up to --parallel at a time, and the table
(test NDCG@10 / HR@10, epochs, wall seconds, sequences/s, the validation curve) is printed and
written to --out/accuracy.json. Not a test: it measures.

Training reads its feature spec from the prepared folder's prepared.json: a machine without
NVTabular/Merlin (a GPU box) trains on a folder prepared elsewhere.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.output import write_json

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "training" / "configs"
USER_CONTEXT = ["age_first", "gender_first", "occupation_first"]  # ML-1M user features (not in the "side information")
ITEM_SIDE = ["genres_list", "year_list"]
# the standard ML-1M protocol of the published SASRec / BERT4Rec / gSASRec figures ranks only items
# not yet in the sequence (a user rates a movie once); every variant evaluates so
PROTOCOL = ["train.exclude_seen=true"]

# name -> (config, overrides). "side": genres and year; "items": item ids only.
VARIANTS: dict[str, tuple[str, list[str]]] = {}
for _config in ("gpt2_clm", "llama_clm", "bert_mlm", "xlnet_mlm"):
    VARIANTS[f"{_config}:side"] = (_config, [f"model.exclude_features={json.dumps(USER_CONTEXT)}"])
    VARIANTS[f"{_config}:items"] = (_config, [f"model.exclude_features={json.dumps(USER_CONTEXT + ITEM_SIDE)}"])
_ITEMS = VARIANTS["gpt2_clm:items"][1]
VARIANTS["gpt2_clm:side+user"] = ("gpt2_clm", [])
VARIANTS["gpt2_clm:items:d128"] = ("gpt2_clm", _ITEMS + ["model.d_model=128"])
VARIANTS["gpt2_clm:items:d256-h4-drop0.3"] = ("gpt2_clm", _ITEMS + ["model.d_model=256", "model.n_heads=4",
                                                                    "model.dropout=0.3", "model.attention_dropout=0.3"])
VARIANTS["gpt2_clm:items:lr2e-3"] = ("gpt2_clm", _ITEMS + ["train.lr=0.002"])
VARIANTS["gpt2_clm:items:lr4e-3"] = ("gpt2_clm", _ITEMS + ["train.lr=0.004"])
VARIANTS["gpt2_clm:items:drop0.1"] = ("gpt2_clm", _ITEMS + ["model.dropout=0.1", "model.attention_dropout=0.1"])
VARIANTS["gpt2_clm:items:attdrop0"] = ("gpt2_clm", _ITEMS + ["model.attention_dropout=0.0"])
VARIANTS["gpt2_clm:side:d128"] = ("gpt2_clm", VARIANTS["gpt2_clm:side"][1] + ["model.d_model=128"])


def history(run: Path) -> list[dict]:
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as handle:
        return [{k: round(float(v), 4) for k, v in row.items() if v and k in ("epoch", "valid_ndcg@10", "train_loss", "sequences_per_s")}
                for row in csv.DictReader(handle)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "demo" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "accuracy")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--variant", action="append", default=[], metavar="'NAME=BASE key=value ...'",
                        help="an extra variant: a named one (BASE) plus overrides; repeatable")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (1 on this 2-core CPU)")
    parser.add_argument("overrides", nargs="*", help="section.key=value for every variant")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else ([] if args.variant else list(VARIANTS))
    for text in args.variant:
        name, _, rest = text.partition("=")
        base, *overrides = rest.split()
        if base not in VARIANTS:
            raise SystemExit(f"--variant {text!r}: unknown base {base!r}; expected one of {list(VARIANTS)}")
        VARIANTS[name] = (VARIANTS[base][0], VARIANTS[base][1] + overrides)
        names.append(name)
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise SystemExit(f"--only: unknown variant(s) {unknown}; expected names from {list(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    pending, running, rows = list(names), {}, []
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            config, overrides = VARIANTS[name]
            run = args.out / name.replace(":", "__")
            shutil.rmtree(run, ignore_errors=True)
            train_args = ["--config", str(CONFIGS / f"{config}.yaml"), "--data", str(args.data), "--out", str(run),
                          *PROTOCOL, *args.overrides, *overrides]  # a variant's own settings win
            command = [sys.executable, "-m", "training.train", *train_args]
            log = open(args.out / f"{run.name}.log", "w")
            running[name] = (subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), run, time.perf_counter(), log)
        time.sleep(1)
        for name, (process, run, started, log) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[name]
            row = {"variant": name, "overrides": PROTOCOL + args.overrides + VARIANTS[name][1], "wall_seconds": round(time.perf_counter() - started),
                   "returncode": process.returncode, "history": history(run)}
            if process.returncode == 0:
                result = json.loads((run / "metrics.json").read_text())
                row.update({"ndcg@10": round(result["test"]["ndcg@10"], 4), "hr@10": round(result["test"]["hr@10"], 4),
                            "valid_ndcg@10": round(result["valid"]["ndcg@10"], 4), "best_epoch": result["best_epoch"],
                            "epochs": len(row["history"]), "stopped_by": result["stopped_by"],
                            "train_seconds": round(result["train_seconds"]),
                            "sequences_per_s": round(result["train_sequences_per_s"], 1)})
            else:
                row["log_tail"] = (args.out / f"{run.name}.log").read_text()[-2000:]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("history", "overrides")}), flush=True)
            write_json(args.out / "accuracy.json", rows)


if __name__ == "__main__":
    main()
