"""The model step's best item codes -> the k best original item ids, best first.

The model (model.pt) already ranked: its `max_k` best codes per session, special codes and,
with exclude_seen, the session's items scored -inf. Here: the codes become the original ids
(the item column's category file), and a session that asks for more items than it has left
(finite scores) is refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


class RankingError(ValueError):
    pass


class TopK:
    def __init__(self, folder: Path):
        folder = Path(folder)
        spec = json.loads((folder / "topk.json").read_text())
        self.max_k, self.first_code = int(spec["max_k"]), int(spec["first_code"])
        table = pd.read_parquet(folder / spec["categories"])
        values = table[table.columns[0]]
        codes = values.index.to_numpy()
        text = values.dtype == object
        self.ids = np.empty(int(codes.max()) + 1 if len(codes) else 0, dtype=object if text else np.int64)
        self.ids[codes] = [v.encode() for v in values] if text else values.to_numpy()

    def top(self, codes: np.ndarray, scores: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ks = np.unique(np.asarray(k).reshape(-1))
        if len(ks) != 1:
            raise RankingError(f"input 'k': expected one value for every session of a request, got {ks.tolist()}")
        k = int(ks[0])
        if not 1 <= k <= self.max_k:
            raise RankingError(f"input 'k': expected 1..{self.max_k} (the exported maximum), got {k}")
        codes, scores = codes[:, :k], scores[:, :k]
        left = np.isfinite(scores).sum(axis=1)
        if (left < k).any():
            row = int(np.flatnonzero(left < k)[0])
            raise RankingError(f"input 'k': expected at most the {int(left[row])} items left to recommend "
                               f"for session {row}, got {k}")
        if (codes < self.first_code).any() or (codes >= len(self.ids)).any():  # model.pt scores these -inf
            raise RankingError(f"model step: returned item codes outside {self.first_code}..{len(self.ids) - 1}")
        return self.ids[codes], np.ascontiguousarray(scores)
