"""Reference recommenders that a trained model must beat, scored by training.evaluate on the
same rows, targets and seen-item exclusion as the model:

- most popular: items ranked by their count in the training split;
- first-order transitions: the most frequent successors in training of the row's last item
  (equal counts: the more popular first), then the most popular items;
- sequential rules (SR, Ludewig & Jannach): the items that followed the last item within 10
  events in training, weighted 1/distance, 20 rules per item, then the most popular items;
- session kNN (V-SkNN): the items of the 100 training sessions most similar to the row (linear
  decay over its last 10 events, cosine), then the most popular items.

    python -m training.baselines --data PREPARED [--split test] [--protocol last|all] [--exclude-seen]

Each baseline is a scorer: a batch (as SequenceData.batches gives it, targets removed) ->
scores [rows, catalog]; ties are broken towards the lower code, as serving does.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from training.codes import SPECIAL_CODES
from training.data import SequenceData
from training.evaluate import evaluate_scores

Scorer = Callable[[dict], torch.Tensor]


def popularity_scores(train: SequenceData) -> torch.Tensor:
    """[catalog] float64: training count plus a tie-break below 1 favouring lower codes; -inf for pad/null/OOV."""
    counts = train.item_counts().double()
    catalog = len(counts)
    scores = counts + (catalog - torch.arange(catalog, dtype=torch.float64)) / (catalog + 1)
    scores[:SPECIAL_CODES["first_value"]] = float("-inf")
    return scores


def most_popular(train: SequenceData) -> Scorer:
    scores = popularity_scores(train)
    return lambda batch: scores.expand(len(batch[train.spec.item]), -1)


def rule_weights(train: SequenceData, steps: int = 1, prune: int | None = None) -> torch.Tensor:
    """Sparse [catalog, catalog]: the weight of "item j follows item i", summed over training
    sequences: 1/d for each j d <= `steps` events after i (sequential rules, Ludewig & Jannach's
    SR; steps 1: first-order transition counts); `prune` keeps each item's strongest rules."""
    items = train.values[train.spec.item]
    ends = np.repeat(train.offsets[1:], np.diff(train.offsets))  # each event's row end
    sources, targets, weights = [], [], []
    for distance in range(1, steps + 1):
        first = np.flatnonzero(np.arange(len(items)) + distance < ends)  # events with a successor `distance` later in the row
        sources.append(items[first]), targets.append(items[first + distance])
        weights.append(np.full(len(first), 1.0 / distance))
    pairs = torch.from_numpy(np.stack([np.concatenate(sources), np.concatenate(targets)]))
    catalog = train.spec.item_cardinality
    rules = torch.sparse_coo_tensor(pairs, torch.from_numpy(np.concatenate(weights)), (catalog, catalog), check_invariants=False).coalesce()
    if prune is None:
        return rules
    source, weight = rules.indices()[0].numpy(), rules.values().numpy()
    order = np.lexsort((-weight, source))  # by item, strongest rule first
    starts = np.searchsorted(source[order], source[order], side="left")
    kept = order[np.arange(len(order)) - starts < prune]
    return torch.sparse_coo_tensor(rules.indices()[:, kept], rules.values()[kept], (catalog, catalog), check_invariants=False).coalesce()


def sequential_rules(train: SequenceData, steps: int = 10, prune: int | None = 20) -> Scorer:
    """Items that followed the row's last item within `steps` events, by summed 1/distance, then the
    most popular items (session-rec's SR defaults: 10 steps, 1/d, 20 rules per item)."""
    rules = rule_weights(train, steps, prune)
    popular = popularity_scores(train)
    weight = float(len(train.values[train.spec.item]) + 1) * steps  # a rule (>= 1/steps) ranks above any popularity score

    def scores(batch: dict) -> torch.Tensor:
        items = batch[train.spec.item]
        positions = torch.arange(items.shape[1]).expand_as(items)
        last = items.gather(1, torch.where(items != SPECIAL_CODES["pad"], positions, -1).max(1).values.clamp(min=0)[:, None])
        return rules.index_select(0, last.squeeze(1)).to_dense() * weight + popular

    return scores


def first_order_transitions(train: SequenceData) -> Scorer:
    """The most frequent successors of the row's last item, then the most popular items."""
    return sequential_rules(train, steps=1, prune=None)


def decay_weights(items: torch.Tensor, last: int = 10) -> torch.Tensor:
    """[B, L] weights of a right-padded batch's events: 1 for the last event, 0.1 less for each one
    before it, 0 from the `last`-th back and at padding (V-SkNN's linear decay)."""
    real = items != SPECIAL_CODES["pad"]
    back = real.sum(1, keepdim=True) - 1 - torch.arange(items.shape[1])[None, :]  # 0 for the last event
    return torch.where(real, (1 - back / last).clamp(min=0), torch.zeros(()))


def session_knn(train: SequenceData, neighbours: int = 100, decay: int = 10) -> Scorer:
    """V-SkNN (Ludewig & Jannach): the training sessions most similar to the row, similarity the
    decay-weighted items they share over sqrt(|row items| x |session items|) (cosine of the
    weighted row vector and the binary session vector); an item scores the summed similarity of the
    `neighbours` most similar sessions holding it, then the most popular items. Every session that
    shares an item is a candidate (no sampling: the prepared rows carry no session time to sample
    the most recent by, and the similarities of all of them cost one sparse product)."""
    from scipy import sparse

    catalog = train.spec.item_cardinality
    rows = np.repeat(np.arange(len(train)), train.lengths)
    sessions = sparse.csr_matrix((np.ones(len(rows)), (rows, train.values[train.spec.item])), shape=(len(train), catalog))
    sessions.data[:] = 1.0  # an item once per session, however often it occurs there
    session_norms = np.sqrt(np.asarray(sessions.sum(1)).ravel())
    popular = popularity_scores(train)
    popular = popular / (popular[torch.isfinite(popular)].max() + 1)  # below 1: any neighbour's item ranks above

    def scores(batch: dict) -> torch.Tensor:
        items = batch[train.spec.item]
        weights = decay_weights(items, decay).double()
        query = torch.zeros(len(items), catalog, dtype=torch.float64).scatter_reduce(1, items, weights, "amax")  # an item's latest weight
        query[:, : SPECIAL_CODES["first_value"]] = 0
        present = torch.zeros_like(query).scatter(1, items, 1.0)[:, SPECIAL_CODES["first_value"]:]
        sizes = present.sum(1, keepdim=True).clamp(min=1)  # distinct items of the row, decayed to 0 or not
        similarity = torch.from_numpy(np.asarray((sparse.csr_matrix(query.numpy()) @ sessions.T).todense()))
        similarity = similarity / (sizes.sqrt() * torch.from_numpy(session_norms).clamp(min=1)[None, :])
        top = torch.topk(similarity, min(neighbours, similarity.shape[1]), dim=1)
        kept = torch.zeros_like(similarity).scatter(1, top.indices, top.values)
        knn = torch.from_numpy(np.asarray((sparse.csr_matrix(kept.numpy()) @ sessions).todense()))
        out = torch.where(knn > 0, knn + 1, popular.expand_as(knn))
        out[:, : SPECIAL_CODES["first_value"]] = float("-inf")
        return out

    return scores


BASELINES = {"most_popular": most_popular, "transitions": first_order_transitions, "sequential_rules": sequential_rules,
             "session_knn": session_knn}


def baseline_metrics(train: SequenceData, data: SequenceData, ks, exclude_seen: bool = False, batch_size: int = 512,
                     protocol: str = "last", names=("most_popular", "transitions")) -> dict[str, dict[str, float]]:
    """{name: metrics} of the named baselines on `data`, fitted on `train`."""
    return {name: evaluate_scores(BASELINES[name](train), data, ks, exclude_seen, batch_size, protocol) for name in names}


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json
    import warnings
    from pathlib import Path

    from training.evaluate import PROTOCOLS
    from training.features import feature_spec

    parser = argparse.ArgumentParser(prog="python -m training.baselines", description="Score the classic baselines on a prepared split.")
    parser.add_argument("--data", type=Path, required=True, help="prepared folder (training.prepare --out)")
    parser.add_argument("--split", default="test", help="split to score (fitted on train)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="last", help="last: each row's final event; all: every next event")
    parser.add_argument("--exclude-seen", action="store_true", help="drop the sequence's own items from the ranking")
    parser.add_argument("--baselines", default=",".join(BASELINES), help=f"comma-separated, of {list(BASELINES)}")
    args = parser.parse_args(argv)
    names = [name for name in args.baselines.split(",") if name]
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise SystemExit(f"baselines: --baselines: expected names of {list(BASELINES)}, got {unknown}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            spec = feature_spec(args.data)
        train, data = SequenceData(args.data, "train", spec), SequenceData(args.data, args.split, spec)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"baselines: {error}")
    for name in names:
        metrics = baseline_metrics(train, data, (5, 10, 20), args.exclude_seen, protocol=args.protocol, names=(name,))[name]
        print(json.dumps({"baseline": name, "split": args.split, "protocol": args.protocol,
                          **{key: round(value, 5) for key, value in metrics.items()}}), flush=True)


if __name__ == "__main__":
    main()
