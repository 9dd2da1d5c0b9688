"""Recompute a saved run's ranking metrics on a split.

    python -m training.evaluate --run RUN_DIR [--split test|valid] [--exclude-seen | --no-exclude-seen]

Every row of the split is one prediction: its events but the last are the input, the last
is the target, ranked against the full catalog.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from training import run_dir
from training.data import SequenceData
from training.metrics import ranking_metrics, target_ranks
from training.model import NextItemModel


@torch.no_grad()
def evaluate(model: NextItemModel, data: SequenceData, ks, exclude_seen: bool = False, batch_size: int = 512) -> dict[str, float]:
    model.eval()
    device = next(model.parameters()).device
    return evaluate_scores(lambda batch: model.next_item_scores({name: values.to(device) for name, values in batch.items()}),
                           data, ks, exclude_seen, batch_size)


@torch.no_grad()
def evaluate_scores(next_item_scores, data: SequenceData, ks, exclude_seen: bool = False, batch_size: int = 512) -> dict[str, float]:
    """Mean metrics of any scorer (a batch without its targets -> scores [rows, catalog]) over the
    split's rows: the model and the baselines (training.baselines) are ranked alike."""
    sums: dict[str, float] = {}
    for batch in data.batches(batch_size, drop_last_event=True):
        targets = batch.pop("targets")
        scores = next_item_scores(batch)
        seen = batch[data.spec.item].to(scores.device) if exclude_seen else None
        ranks = target_ranks(scores, targets.to(scores.device), exclude=seen)
        for name, values in ranking_metrics(ranks, ks).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    return {name: total / max(len(data), 1) for name, total in sums.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory written by training.train")
    parser.add_argument("--split", default="test", help="prepared split to evaluate (test, valid, ...)")
    parser.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                        help="drop the sequence's own items from the ranking (default: the run's train.exclude_seen)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    try:
        model, config = run_dir.load_model(args.run)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"evaluate: {error}")
    exclude = config.train.exclude_seen if args.exclude_seen is None else args.exclude_seen
    data = SequenceData(run_dir.data_dir(args.run), args.split, model.spec)
    metrics = evaluate(model, data, config.train.ks, exclude, config.train.eval_batch_size)
    print(json.dumps({"split": args.split, "sequences": len(data), **{k: round(v, 5) for k, v in metrics.items()}}, indent=1))


if __name__ == "__main__":
    main()
