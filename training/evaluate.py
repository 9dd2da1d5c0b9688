"""Recompute a saved run's ranking metrics on a split.

    python -m training.evaluate --run RUN_DIR [--split test|valid] [--exclude-seen | --no-exclude-seen] [--protocol last|all]

`last` (default): every row of the split is one prediction, its events but the last are the
input, the last is the target. `all`: every next event of every row is predicted from the
events before it (the session-based protocol). Targets are ranked against the full catalog.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from training import cli, run_dir
from training.allocator import keep_freed_memory
from training.batches import SequenceData
from training.metrics import PROTOCOLS, ranking_metrics, target_ranks
from training.model.next_item import NextItemModel
from training.progress import Progress


SCORE_ROWS = 1024  # prefixes scored at once over the catalog (bounds the [rows, catalog] scores)


@torch.no_grad()
def evaluate(model: NextItemModel, data: SequenceData, ks, exclude_seen: bool = False, batch_size: int = 512,
             protocol: str = "last", *, progress: str | None = None) -> dict[str, float]:
    """Mean metrics of the model on the split; `progress`: the name its progress is shown under (None: quiet)."""
    model.eval()
    device = next(model.parameters()).device
    if protocol == "all" and _one_forward_per_sequence(model, data):
        return _all_positions(model, data, ks, exclude_seen, batch_size, progress)
    return evaluate_scores(lambda batch: model.next_item_scores({name: values.to(device) for name, values in batch.items()}),
                           data, ks, exclude_seen, batch_size, protocol, progress=progress)


@torch.no_grad()
def evaluate_scores(next_item_scores, data: SequenceData, ks, exclude_seen: bool = False, batch_size: int = 512,
                    protocol: str = "last", *, progress: str | None = None) -> dict[str, float]:
    """Mean metrics of any scorer (a batch without its targets -> scores [rows, catalog]) over the
    split's rows (`all`: over every prefix of them): the model and the baselines are ranked alike."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {list(PROTOCOLS)}, got {protocol!r}")
    data = data.prefixes() if protocol == "all" else data
    sums: dict[str, float] = {}
    with Progress(progress or "", len(data), "rows", enabled=progress is not None) as shown:
        for batch in data.batches(batch_size, drop_last_event=True):
            targets = batch.pop("targets")
            scores = next_item_scores(batch)
            seen = batch[data.spec.item].to(scores.device) if exclude_seen else None
            add_metrics(sums, target_ranks(scores, targets.to(scores.device), exclude=seen), ks)
            shown.update(len(targets))
    return {name: total / max(len(data), 1) for name, total in sums.items()}


def add_metrics(sums: dict[str, float], ranks: torch.Tensor, ks) -> None:
    """Add each metric's per-row values of `ranks` into `sums` (divide by the rows at the end)."""
    for name, values in ranking_metrics(ranks, ks).items():
        sums[name] = sums.get(name, 0.0) + float(values.sum())


def states_answer_prefixes(model: NextItemModel) -> bool:
    """A causal body's state at event p is what it gives the prefix ending at p, when positions
    count from the start (up to the events the model reads)."""
    return not model.appends_mask and model.config.positions == "from_start"


def _one_forward_per_sequence(model: NextItemModel, data: SequenceData) -> bool:
    """States answer prefixes and every row fits the events the model reads."""
    longest = int(data.lengths.max()) if len(data) else 0
    return states_answer_prefixes(model) and longest <= model.config.max_length


def _all_positions(model: NextItemModel, data: SequenceData, ks, exclude_seen: bool, batch_size: int,
                   progress: str | None = None) -> dict[str, float]:
    """The `all` protocol for causal bodies: one forward per sequence, every position's state scored."""
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    predictions = 0
    workspace = score_workspace(model, SCORE_ROWS)
    total = int((data.lengths - 1).clip(min=0).sum())
    with Progress(progress or "", total, "prefixes", enabled=progress is not None) as shown:
        for batch in data.batches(batch_size):
            batch = {name: values.to(device) for name, values in batch.items()}
            items = batch[model.spec.item]
            for row, position, scores, prefix_items in position_scores(model, batch, workspace=workspace):
                predictions += len(row)
                add_metrics(sums, target_ranks(scores, items[row, position + 1], exclude=prefix_items if exclude_seen else None), ks)
                shown.update(len(row))
    return {name: total / max(predictions, 1) for name, total in sums.items()}


def score_workspace(model: NextItemModel, rows: int) -> torch.Tensor:
    """A buffer for `rows` prefixes' scores over the catalog, reused chunk after chunk: a fresh one per
    chunk is a new mapping the kernel faults in page by page (at 100k+ items, more time than the product)."""
    weights = model.item_weights()
    return weights.new_empty(rows, weights.shape[0])


def position_scores(model: NextItemModel, batch: dict[str, torch.Tensor], with_last: bool = False, score_rows: int = SCORE_ROWS,
                    workspace: torch.Tensor | None = None):
    """One forward of a causal body over a right-padded batch; yields, `score_rows` states at a time,
    (rows, positions, scores of the prefix ending at each, that prefix's items 0-padded [rows, L]).
    with_last: the last real event's state too (it predicts nothing in evaluation, the next item in predict).
    workspace: score_workspace(model, score_rows), which holds each chunk's scores until the next chunk's."""
    states = model.encode(batch)
    hidden, mask = states.hidden, states.mask
    items = batch[model.spec.item]
    rows, positions = (mask if with_last else mask[:, 1:]).nonzero(as_tuple=True)  # position p predicts event p + 1
    for chunk in range(0, len(rows), score_rows):
        row, position = rows[chunk:chunk + score_rows], positions[chunk:chunk + score_rows]
        prefix = torch.arange(items.shape[1], device=items.device)[None, :] <= position[:, None]
        prefix_items = items[row].masked_fill(~prefix, 0)
        out = None if workspace is None else workspace[:len(row)]
        yield row, position, model.add_repeat_scores(model.scores(hidden[row, position], out=out), prefix_items, position), prefix_items


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory written by training.train")
    parser.add_argument("--split", default="test", help="prepared split to evaluate (test, valid, ...)")
    parser.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                        help="drop the sequence's own items from the ranking (default: the run's train.exclude_seen)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="last",
                        help="last: each row's final event; all: every next event from its prefix")
    args = parser.parse_args(argv)
    keep_freed_memory()
    warnings.simplefilter("ignore", UserWarning)
    with cli.answers_bad_input(parser.name, FileNotFoundError, ValueError):
        model, config = run_dir.load_model(args.run)
        data = SequenceData(run_dir.data_dir(args.run), args.split, model.spec)
    exclude = config.train.exclude_seen if args.exclude_seen is None else args.exclude_seen
    metrics = evaluate(model, data, config.train.ks, exclude, config.train.eval_batch_size, args.protocol, progress="evaluate")
    print(json.dumps({"split": args.split, "protocol": args.protocol, "sequences": len(data), **{k: round(v, 5) for k, v in metrics.items()}}, indent=1))


if __name__ == "__main__":
    main()
