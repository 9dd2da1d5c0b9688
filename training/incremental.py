"""Incremental time-window training, the Transformers4Rec paper's protocol: train on window t,
evaluate on window t+1, roll forward with the same model and optimizer; report every window's
metrics and their average.

    python -m training.incremental --config CONFIG.yaml --data DIR --out RUN_DIR [section.key=value ...]

DIR must be prepared with `--split time` (it holds windows/NNNN/). `train.epochs` is the
number of epochs per window. Writes RUN_DIR like training.train (the final weights in
model.safetensors) plus incremental.json and incremental.csv.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from training import cli, run_dir
from training.files import replace_csv, replace_json
from training.data import prepared
from training.config import Config, ConfigError, load_config
from training.batches import SequenceData
from training.evaluate import evaluate
from training.model.features import FeatureError
from training.model.losses import LossError
from training.model.configuration import ModelConfigError
from training.train import Trainer

EMPTY_WINDOW = "no sequence with 2 or more events"


def window_splits(data: Path) -> list[str]:
    summary = prepared.load_summary(data)
    if summary["split"] != "time" or not summary.get("windows"):
        raise ConfigError(f"data dir {data}: incremental training needs data prepared with --split time, got {summary['split']!r}")
    windows = sorted(w for ws in summary["windows"].values() for w in ws)
    return [f"{prepared.WINDOWS_DIR}/{w:04d}" for w in windows]


def run_incremental(config: Config, data: Path, out: Path) -> dict:
    every_split = window_splits(data)
    trainer = Trainer(config, data, out)
    train = config.train
    every_window = [SequenceData(data, split, trainer.spec) for split in every_split]
    skipped = [split for split, window in zip(every_split, every_window) if len(window) == 0]
    for split in skipped:  # nothing to train on and nothing to predict: the next window follows the previous one
        tqdm.write(f"{split}: skipped, {EMPTY_WINDOW}", file=sys.stderr)
    splits = [split for split in every_split if split not in skipped]
    windows = [window for window in every_window if len(window)]
    if len(windows) < 2:
        raise ConfigError(f"data dir {data}: incremental training needs 2 or more windows with a sequence of 2 or more events, got {len(windows)}")
    total_steps = sum(-(-len(w) // train.batch_size) for w in windows[:-1]) * train.epochs
    trainer.schedule_steps(total_steps)
    run_dir.create(out, data, config, trainer.spec)
    rows = []
    for index in range(len(windows) - 1):
        record = trainer.train_on(windows[index], train.epochs)
        metrics = evaluate(trainer.model, windows[index + 1], train.ks, train.exclude_seen, train.eval_batch_size, train.eval_protocol)
        rows.append({"train_window": splits[index], "eval_window": splits[index + 1], "train_loss": record["train_loss"],
                     "eval_sequences": len(windows[index + 1]), **metrics})
        tqdm.write(f"{splits[index]} -> {splits[index + 1]}: ndcg@10 {metrics.get('ndcg@10', float('nan')):.4f}", file=sys.stderr)
    run_dir.save_weights(trainer.model, out / run_dir.WEIGHTS)
    metric_names = [k for k in rows[0] if "@" in k]
    result = {"windows": rows, "average": {name: sum(r[name] for r in rows) / len(rows) for name in metric_names},
              "skipped_windows": [{"window": split, "reason": EMPTY_WINDOW} for split in skipped]}
    write_outputs(out, result)
    return result


def write_outputs(out: Path, result: dict) -> None:
    """incremental.json (everything) and incremental.csv (a row per window), each replaced whole."""
    replace_json(out / "incremental.json", result)
    replace_csv(out / "incremental.csv", result["windows"])


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m training.incremental", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        if args.out.exists() and any(args.out.iterdir()):
            raise ConfigError(f"run directory {args.out} exists and is not empty: choose another --out")
        result = run_incremental(config, args.data, args.out)
    except (ConfigError, ModelConfigError, LossError, FeatureError, FileNotFoundError) as error:
        cli.refuse("incremental", error)
    print(json.dumps(result["average"], indent=1))


if __name__ == "__main__":
    main()
