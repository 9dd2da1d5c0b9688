"""Next-item scores -> the k best original item ids, best first (ties: the lower code first).

Codes below `first_code` (pad, null, OOV) and, with `exclude_seen`, the session's own
items are never returned.
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
        self.max_k, self.exclude_seen, self.first_code = int(spec["max_k"]), bool(spec["exclude_seen"]), int(spec["first_code"])
        table = pd.read_parquet(folder / spec["categories"])
        values = table[table.columns[0]]
        codes = values.index.to_numpy()
        text = values.dtype == object
        self.ids = np.empty(int(codes.max()) + 1 if len(codes) else 0, dtype=object if text else np.int64)
        self.ids[codes] = [v.encode() for v in values] if text else values.to_numpy()

    def top(self, scores: np.ndarray, k: np.ndarray, seen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        ks = np.unique(np.asarray(k).reshape(-1))
        if len(ks) != 1:
            raise RankingError(f"input 'k': expected one value for every session of a request, got {ks.tolist()}")
        k = int(ks[0])
        if not 1 <= k <= self.max_k:
            raise RankingError(f"input 'k': expected 1..{self.max_k} (the exported maximum), got {k}")
        scores = np.array(scores, dtype=np.float32)  # a copy: masking must not touch the input
        scores[:, : self.first_code] = -np.inf
        scores[:, len(self.ids):] = -np.inf
        if self.exclude_seen and seen is not None:
            rows = np.repeat(np.arange(len(scores)), seen.shape[1])
            scores[rows, seen.reshape(-1)] = -np.inf
        left = np.isfinite(scores).sum(axis=1)
        if (left < k).any():
            row = int(np.flatnonzero(left < k)[0])
            raise RankingError(f"input 'k': expected at most the {int(left[row])} items left to recommend "
                               f"for session {row}, got {k}")
        codes = np.empty((len(scores), k), dtype=np.int64)
        for row, values in enumerate(scores):
            threshold = np.partition(values, len(values) - k)[len(values) - k]
            candidates = np.flatnonzero(values >= threshold)
            codes[row] = candidates[np.lexsort((candidates, -values[candidates]))[:k]]
        return self.ids[codes], np.take_along_axis(scores, codes, axis=1)
