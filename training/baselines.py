"""Reference recommenders that a trained model must beat, scored by training.evaluate on the
same rows, targets and seen-item exclusion as the model:

- most popular: items ranked by their count in the training split;
- first-order transitions: the most frequent successors in training of the row's last item
  (equal counts: the more popular first), then the most popular items.

Each baseline is a scorer: a batch (as SequenceData.batches gives it, targets removed) ->
scores [rows, catalog]; ties are broken towards the lower code, as serving does.
"""
from __future__ import annotations

from typing import Callable

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


def transition_counts(train: SequenceData) -> torch.Tensor:
    """Sparse [catalog, catalog]: how often item j directly follows item i in a training sequence."""
    items = torch.from_numpy(train.values[train.spec.item])
    within_row = torch.ones(max(len(items) - 1, 0), dtype=torch.bool)
    within_row[torch.from_numpy(train.offsets[1:-1] - 1)] = False  # a row's last event has no successor in it
    pairs = torch.stack([items[:-1][within_row], items[1:][within_row]])
    catalog = train.spec.item_cardinality
    return torch.sparse_coo_tensor(pairs, torch.ones(pairs.shape[1], dtype=torch.float64), (catalog, catalog)).coalesce()


def first_order_transitions(train: SequenceData) -> Scorer:
    counts = transition_counts(train)
    popular = popularity_scores(train)
    weight = float(len(train.values[train.spec.item]) + 1)  # above any popularity score: a seen transition ranks first

    def scores(batch: dict) -> torch.Tensor:
        items = batch[train.spec.item]
        positions = torch.arange(items.shape[1]).expand_as(items)
        last = items.gather(1, torch.where(items != SPECIAL_CODES["pad"], positions, -1).max(1).values.clamp(min=0)[:, None])
        return counts.index_select(0, last.squeeze(1)).to_dense() * weight + popular

    return scores


def baseline_metrics(train: SequenceData, data: SequenceData, ks, exclude_seen: bool = False, batch_size: int = 512) -> dict[str, dict[str, float]]:
    """{"most_popular": metrics, "transitions": metrics} on `data`, fitted on `train`."""
    return {name: evaluate_scores(scorer(train), data, ks, exclude_seen, batch_size)
            for name, scorer in (("most_popular", most_popular), ("transitions", first_order_transitions))}
