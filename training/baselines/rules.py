"""Rule baselines: first-order transitions and sequential rules (SR, Ludewig & Jannach)."""
from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from training.baselines.popularity import Scorer, dense_scores, popularity_below_zero, popularity_scores, row_of_entries
from training.data.codes import SPECIAL_CODES
from training.batches import SequenceData


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
    """Items that followed the row's last item within `steps` events, by summed 1/distance (equal
    sums: the more popular first), then the most popular items (session-rec's SR defaults: 10
    steps, 1/d, 20 rules per item). Float32 scores: a rule's rank in its row, above the fallback."""
    rules = rule_weights(train, steps, prune)
    rules = sparse.csr_matrix((rules.values().numpy(), tuple(rules.indices().numpy())), shape=rules.shape)
    popular, fallback = popularity_scores(train).numpy(), popularity_below_zero(train)

    def scores(batch: dict) -> torch.Tensor:
        items = batch[train.spec.item].numpy()
        last = items[np.arange(len(items)), np.maximum((items != SPECIAL_CODES["pad"]).sum(1) - 1, 0)]
        followers = rules[last]
        rows = row_of_entries(followers)
        order = np.lexsort((-popular[followers.indices], -followers.data, rows))  # by row, strongest first
        counts = np.diff(followers.indptr)
        followers.data[order] = counts[rows[order]] - (np.arange(followers.nnz) - followers.indptr[rows[order]])  # m..1
        return dense_scores(followers, fallback)

    return scores


def first_order_transitions(train: SequenceData) -> Scorer:
    """The most frequent successors of the row's last item, then the most popular items."""
    return sequential_rules(train, steps=1, prune=None)
