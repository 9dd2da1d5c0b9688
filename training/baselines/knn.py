"""Session kNN baselines, sparse at real-session scale (100k+ items, 50k+ training sessions):
V-SkNN (Ludewig & Jannach) and VSTAN (Latifi, Jannach & Ferraro 2021, STAN by Garg et al. 2019
plus V-SkNN's position weight of the match and IDF), as in session-rec's knn/vsknn.py and
knn/vstan.py.

Training sessions are held in time order (`session_times`, each training row's session start,
unix seconds; None: the prepared row order is taken as the time order, which it is not in
general: prepared rows are sorted by session key), so "the most recent sessions" are the highest
session indices. A row's candidates are the training sessions sharing any of its items; with
`sample`, only the `sample` most recent of them (recency sampling). Ties in similarity go to the
more recent session. Queries, similarities and neighbours stay scipy.sparse; only the final
[rows, catalog] scores are dense, float32 (VSTAN's float64). Items no neighbour holds rank below, in popularity
order (`popularity_below_zero`).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from training.baselines.popularity import Scorer, dense_scores, popularity_below_zero, row_of_entries
from training.data.codes import SPECIAL_CODES
from training.batches import SequenceData

DAY_S = 86_400


def decay_weights(items: torch.Tensor, last: int = 10) -> torch.Tensor:
    """[B, L] weights of a right-padded batch's events: 1 for the last event, 0.1 less for each one
    before it, 0 from the `last`-th back and at padding (V-SkNN's linear decay)."""
    real = items != SPECIAL_CODES["pad"]
    back = real.sum(1, keepdim=True) - 1 - torch.arange(items.shape[1])[None, :]  # 0 for the last event
    return torch.where(real, (1 - back / last).clamp(min=0), torch.zeros(()))


def cells(rows: np.ndarray, columns: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    """CSR of (row, column) -> value; where a cell repeats, the last value given; indices sorted."""
    keys = rows.astype(np.int64) * shape[1] + columns
    _, from_end = np.unique(keys[::-1], return_index=True)
    kept = len(keys) - 1 - from_end  # sorted by key: by row, then column
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[kept], minlength=shape[0]))])
    return sparse.csr_matrix((values[kept], columns[kept], indptr), shape=shape)


def last_per_row(matrix: sparse.csr_matrix, n: int) -> sparse.csr_matrix:
    """Each row's `n` highest columns (sessions in time order: the n most recent)."""
    matrix.sort_indices()
    from_end = np.repeat(matrix.indptr[1:], np.diff(matrix.indptr)) - 1 - np.arange(matrix.nnz)
    return _kept(matrix, from_end < n)


def top_per_row(matrix: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Each row's `k` largest entries; equal values: the higher column (the more recent session)."""
    rows = row_of_entries(matrix)
    order = np.lexsort((-matrix.indices, -matrix.data, rows))
    rank = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    keep = np.zeros(matrix.nnz, dtype=bool)
    keep[order[rank < k]] = True
    return _kept(matrix, keep)


def _kept(matrix: sparse.csr_matrix, keep: np.ndarray) -> sparse.csr_matrix:
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of_entries(matrix)[keep], minlength=matrix.shape[0]))])
    return sparse.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)


class TrainingSessions:
    """The training split as sparse [sessions, catalog] in time order: `positions` holds each item's
    last 1-based position in the session, `binary` 1 for each item held."""

    def __init__(self, train: SequenceData, session_times: np.ndarray | None):
        if session_times is not None and len(session_times) != len(train):
            raise ValueError(f"session_times: expected one per training row ({len(train)}), got {len(session_times)}")
        self.catalog = train.spec.item_cardinality
        times = np.arange(len(train)) if session_times is None else np.asarray(session_times)
        order = np.argsort(times, kind="stable")
        self.times = times[order] if session_times is not None else None
        rank = np.empty(len(train), dtype=np.int64)
        rank[order] = np.arange(len(train))  # each training row's place in time order
        rows = np.repeat(np.arange(len(train)), train.lengths)
        positions = np.arange(len(rows)) - train.offsets[rows] + 1
        self.positions = cells(rank[rows], train.values[train.spec.item], positions.astype(np.float64), (len(train), self.catalog))
        self.binary = sparse.csr_matrix((np.ones(self.positions.nnz), self.positions.indices, self.positions.indptr),
                                        shape=self.positions.shape)
        self.by_item = self.binary.T.tocsr()  # [catalog, sessions]: the sessions holding each item
        self.sizes = np.diff(self.binary.indptr)  # distinct items per session

    def candidates(self, query: sparse.csr_matrix, sample: int | None) -> sparse.csr_matrix:
        """[rows, sessions] query x sessions products, over the `sample` most recent sessions
        sharing an item with the row (`query` holds every item of the row, its weight >= 0)."""
        products = query @ self.by_item
        if sample is None:
            return products
        if query.data.all():  # every item weighs: the products are all the candidates
            return last_per_row(products, sample)
        held = sparse.csr_matrix((np.ones(query.nnz), query.indices, query.indptr), shape=query.shape)
        kept = last_per_row(held @ self.by_item, sample)
        kept.data[:] = 1.0
        return products.multiply(kept).tocsr()


def query_positions(items: torch.Tensor, catalog: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse [rows, catalog]: each real item's last 1-based position in its right-padded row
    (pad, null and OOV left out), and each row's length in events."""
    items = items.numpy()
    lengths = (items != SPECIAL_CODES["pad"]).sum(1)
    rows, columns = np.nonzero(items >= SPECIAL_CODES["first_value"])
    return cells(rows, items[rows, columns], (columns + 1).astype(np.float64), (len(items), catalog)), lengths


def session_knn(train: SequenceData, neighbours: int = 100, decay: int = 10, sample: int | None = 500,
                session_times: np.ndarray | None = None) -> Scorer:
    """V-SkNN (Ludewig & Jannach): the training sessions most similar to the row, similarity the
    decay-weighted items they share over sqrt(|row items| x |session items|) (cosine of the
    weighted row vector, each item at its latest weight, and the binary session vector); an item
    scores 1 + the summed similarity of the `neighbours` most similar sessions holding it, the rest
    in popularity order below. Candidates: the `sample` most recent training sessions sharing an
    item with the row (None: all of them; session-rec's sample_size)."""
    sessions = TrainingSessions(train, session_times)
    fallback = popularity_below_zero(train)

    def scores(batch: dict) -> torch.Tensor:
        items = batch[train.spec.item]
        positions, _ = query_positions(items, sessions.catalog)
        rows = row_of_entries(positions)
        weights = decay_weights(items, decay).numpy()[rows, positions.data.astype(np.int64) - 1]  # the latest weight
        query = sparse.csr_matrix((weights, positions.indices, positions.indptr), shape=positions.shape)
        similarity = sessions.candidates(query, sample)
        similarity.eliminate_zeros()  # shared items all decayed to 0: not a neighbour
        sizes = np.maximum(np.diff(positions.indptr), 1)  # distinct items of the row, decayed to 0 or not
        similarity.data /= np.sqrt(sizes[row_of_entries(similarity)] * np.maximum(sessions.sizes[similarity.indices], 1))
        knn = top_per_row(similarity, neighbours) @ sessions.binary
        knn.data += 1  # any neighbour's item above every fallback
        return dense_scores(knn, fallback)

    return scores


def vstan(train: SequenceData, neighbours: int = 100, sample: int | None = 5000, lambda_spw: float = 1.02,
          lambda_snh: float = 5.0, lambda_inh: float = 2.05, lambda_ipw: float = 1.02, lambda_idf: float = 5.0,
          session_times: np.ndarray | None = None) -> Scorer:
    """VSTAN (session-rec's knn/vstan.py VSKNN_STAN, its defaults: sample_size 5000, cosine,
    lambda_spw 1.02, lambda_snh 5 days, lambda_inh 2.05, lambda_ipw 1.02, lambda_idf 5; k 100).
    For a row of n events and a candidate session s (the `sample` most recent sharing an item):
      similarity = sum over shared items of w(i) / (sqrt(sum over row items of w(i)^2) x sqrt(|s|))
                   x exp(-(t_last - t_s) / lambda_snh days),   w(i) = exp((p(i) - n) / lambda_spw),
    p(i) the item's last 1-based position in the row, |s| the distinct items of s, t_s its start
    time, t_last the latest training session's (session-rec takes the query's own time: the same
    factor for all of a row's neighbours, so the same ranking for rows after the training sessions;
    without `session_times` this factor is left out). Each of the `neighbours` most similar
    sessions gives each of its items j
      similarity x exp(-|q(j) - q*| / lambda_inh) x (1 + lambda_idf x log(sessions / events of j))
                 x exp((p* - n) / lambda_ipw),
    q(j) j's last position in s, q* the last position in s of an item of the row, p* the last
    position in the row of an item of s (items of the row are scored too: session-rec's remind);
    the rest in popularity order below. An item in more events than 1.22 x the sessions gets a
    negative IDF weight, as in session-rec."""
    sessions = TrainingSessions(train, session_times)
    # float64 scores: a product of exponential weights over a long row (ML-1M histories) falls below
    # float32's range, and 90% of its found scores became tied zeros there (VSTAN below most-popular)
    fallback = popularity_below_zero(train).double()
    recency = np.ones(len(train)) if sessions.times is None else np.exp(
        -(sessions.times[-1] - sessions.times) / (lambda_snh * DAY_S))
    idf = 1 + lambda_idf * np.log(len(train) / np.maximum(train.item_counts().numpy(), 1))

    def scores(batch: dict) -> torch.Tensor:
        positions, lengths = query_positions(batch[train.spec.item], sessions.catalog)
        rows = row_of_entries(positions)
        weights = np.exp((positions.data - lengths[rows]) / lambda_spw)
        norms = np.sqrt(np.bincount(rows, weights**2, minlength=len(lengths)))
        similarity = sessions.candidates(sparse.csr_matrix((weights, positions.indices, positions.indptr), shape=positions.shape), sample)
        similarity.data *= recency[similarity.indices] / (norms[row_of_entries(similarity)] * np.sqrt(sessions.sizes[similarity.indices]))
        nearest = top_per_row(similarity, neighbours)
        pair_row, pair_session = row_of_entries(nearest), nearest.indices
        # one entry per (row, neighbour, item of the neighbour)
        counts = sessions.sizes[pair_session]
        pair = np.repeat(np.arange(nearest.nnz), counts)
        entry = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(sessions.positions.indptr[pair_session], counts)
        item, position_in_session = sessions.positions.indices[entry], sessions.positions.data[entry]
        row_keys = rows * sessions.catalog + positions.indices  # sorted: positions' cells are
        keys = pair_row[pair] * sessions.catalog + item
        found = np.minimum(np.searchsorted(row_keys, keys), max(len(row_keys) - 1, 0))
        shared = row_keys[found] == keys if len(row_keys) else np.zeros(len(keys), dtype=bool)
        starts = np.cumsum(counts) - counts
        last_shared_in_session = np.maximum.reduceat(np.where(shared, position_in_session, 0), starts) if len(pair) else pair
        last_shared_in_row = np.maximum.reduceat(np.where(shared, positions.data[found], 0), starts) if len(pair) else pair
        match = np.exp((last_shared_in_row - lengths[pair_row]) / lambda_ipw)
        values = (nearest.data * match)[pair] * idf[item] * np.exp(-np.abs(position_in_session - last_shared_in_session[pair]) / lambda_inh)
        knn = sparse.csr_matrix((values, (pair_row[pair], item)), shape=positions.shape)  # sums over neighbours
        return dense_scores(knn, fallback)

    return scores
