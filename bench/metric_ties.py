"""Benchmark: what the tie rule of training.metrics changes, old rule beside new, in one run.

    .venv/bin/python -m bench.metric_ties --run RUN_DIR [--split test]

Until issue 12, a target's rank counted only the items scored strictly higher (ties in the
target's favour: a model scoring every item alike had HR@10 = NDCG@10 = 1). Now the other
items scored the same count against it (training.metrics.target_ranks). This scores the run's
model, most-popular and a constant score (every item alike) on the same rows under both rules,
with the run's seen-item exclusion, and writes bench/results/metric_ties.json.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from bench.output import write_json
from training import run_dir
from training.baselines import most_popular
from training.batches import SequenceData
from training.evaluate import add_metrics
from training.metrics import target_ranks
from training.model.next_item import FIRST_ITEM_CODE

ROOT = Path(__file__).resolve().parent.parent
REPORTED = ("hr@10", "ndcg@10", "hr@20", "ndcg@20")


def favourable_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    """The old rule: items scored strictly higher than the target (after the same exclusion)."""
    pessimistic = target_ranks(scores, targets, exclude)  # the exclusion and the never-recommendable misses, as now
    if exclude is not None:
        scores = scores.clone().scatter_(1, exclude, float("-inf"))
    higher = (scores > scores.gather(1, targets[:, None])).sum(1)
    return torch.where(pessimistic == scores.shape[1], pessimistic, higher)


@torch.no_grad()
def compare(scorer, data: SequenceData, exclude_seen: bool, batch_size: int = 512) -> dict[str, dict[str, float]]:
    sums = {"old": {}, "new": {}}
    for batch in data.batches(batch_size, drop_last_event=True):
        targets = batch.pop("targets")
        scores = scorer(batch)
        seen = batch[data.spec.item] if exclude_seen else None
        add_metrics(sums["old"], favourable_ranks(scores, targets, seen), (10, 20))
        add_metrics(sums["new"], target_ranks(scores, targets, seen), (10, 20))
    return {rule: {name: round(sums[rule][name] / len(data), 5) for name in REPORTED} for rule in sums}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metric_ties", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory written by training.train")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "metric_ties.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    try:
        model, config = run_dir.load_model(args.run)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"metric_ties: {error}")
    model.eval()
    folder = run_dir.data_dir(args.run)
    data, train = SequenceData(folder, args.split, model.spec), SequenceData(folder, "train", model.spec)

    def constant(batch: dict) -> torch.Tensor:
        scores = torch.zeros(len(batch[model.spec.item]), model.spec.item_cardinality)
        scores[:, :FIRST_ITEM_CODE] = float("-inf")
        return scores

    scorers = {"model": model.next_item_scores, "most_popular": most_popular(train), "constant": constant}
    results = {name: compare(scorer, data, config.train.exclude_seen) for name, scorer in scorers.items()}
    write_json(args.out, {"run": str(args.run), "split": args.split, "rows": len(data),
                          "exclude_seen": config.train.exclude_seen, "results": results})
    print(f"{args.split}: {len(data)} rows, exclude_seen={config.train.exclude_seen}")
    print(f"{'scorer':<14}{'rule':<6}" + "".join(f"{name:>10}" for name in REPORTED))
    for name, by_rule in results.items():
        for rule, metrics in by_rule.items():
            print(f"{name:<14}{rule:<6}" + "".join(f"{metrics[m]:>10.4f}" for m in REPORTED))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
