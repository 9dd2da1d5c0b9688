"""Most popular: items ranked by their count in the training split (ties to the lower code); the
popularity fallback below the sparse scores of the other baselines."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy import sparse

from training.data.codes import SPECIAL_CODES
from training.batches import SequenceData

Scorer = Callable[[dict], torch.Tensor]  # a batch (targets removed) -> scores [rows, catalog]


def popularity_scores(train: SequenceData) -> torch.Tensor:
    """[catalog] float64: training count plus a tie-break below 1 favouring lower codes; -inf for pad/null/OOV."""
    counts = train.item_counts().double()
    catalog = len(counts)
    scores = counts + (catalog - torch.arange(catalog, dtype=torch.float64)) / (catalog + 1)
    scores[:SPECIAL_CODES["first_value"]] = float("-inf")
    return scores


def popularity_below_zero(train: SequenceData) -> torch.Tensor:
    """[catalog] float32 in [-1, 0), in popularity order (one level per rank: exact in float32,
    unlike counts); -inf for pad/null/OOV: a fallback below any positive score."""
    catalog = train.spec.item_cardinality
    order = torch.argsort(popularity_scores(train), descending=True, stable=True)
    fallback = torch.empty(catalog, dtype=torch.float32)
    fallback[order] = -(torch.arange(catalog, dtype=torch.float32) + 1) / (catalog + 1)
    fallback[:SPECIAL_CODES["first_value"]] = float("-inf")
    return fallback


def most_popular(train: SequenceData) -> Scorer:
    scores = popularity_scores(train)
    return lambda batch: scores.expand(len(batch[train.spec.item]), -1)


def row_of_entries(matrix: sparse.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))


def dense_scores(found: sparse.csr_matrix, fallback: torch.Tensor) -> torch.Tensor:
    """[rows, catalog] in the fallback's dtype: the sparse scores where given, else `fallback`."""
    out = fallback.expand(found.shape[0], -1).clone()
    coo = found.tocoo()
    values = torch.from_numpy(coo.data).to(out.dtype)
    out[torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))] = values
    out[:, : SPECIAL_CODES["first_value"]] = float("-inf")
    return out
