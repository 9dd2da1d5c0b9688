"""Offline answers for raw events: the fitted workflow's request-time transform (plain data,
`training.request_transform`, as the served transform step runs it), the run's model in eager
mode and a full sort of the scores. What the served ensemble must answer; reads no pickle."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from training import prepared, request_transform, run_dir


def score_events(run: Path, events: pd.DataFrame, model=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (sequence keys, next-item scores [B, catalog], item codes the model saw [B, L]);
    `model`: the run's model, already loaded."""
    model = model if model is not None else run_dir.load_model(run)[0]
    keys, rows, kept = request_transform.transform_events(Path(run) / run_dir.DATA, events)
    width = int(kept.max())  # lists come padded to the workflow's length: cut the padding every row shares
    spec = model.spec
    batch = {name: torch.from_numpy(rows[name][:, :width]) for name in spec.list_columns}
    batch.update({name: torch.from_numpy(rows[name][:, 0]) for name in spec.context_columns})
    with torch.no_grad():
        scores = model.next_item_scores(batch).float().numpy()
    return keys, scores, batch[spec.item].numpy()


def top_items(run: Path, events: pd.DataFrame, k: int, exclude_seen: bool, model=None) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """-> (sequence keys, each session's k best item codes, their scores), best first; ties to the lower code."""
    keys, scores, seen = score_events(run, events, model)
    if exclude_seen:
        np.put_along_axis(scores, seen, -np.inf, axis=1)
    best = best_codes(scores, k)
    return keys, best, [row[codes] for row, codes in zip(scores, best)]


def recommend(run: Path, events: pd.DataFrame, k: int, exclude_seen: bool) -> dict:
    """session id -> (original item ids, scores), best first; ties go to the lower item code."""
    keys, best, scores = top_items(run, events, k, exclude_seen)
    vocabulary = prepared.item_vocabulary(Path(run) / run_dir.DATA)
    return {session: (vocabulary.reindex(codes).tolist(), values) for session, codes, values in zip(keys, best, scores)}


def best_codes(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Each row's k best codes, best first, equal scores to the lower code (a stable full sort's
    first k), sorting only the codes that score at least the k-th best."""
    k = min(k, scores.shape[1])
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    out = []
    for row, threshold in zip(scores, kth):
        candidates = np.flatnonzero(row >= threshold)
        out.append(candidates[np.lexsort((candidates, -row[candidates]))][:k])
    return out
