"""Offline answers for raw events: the run's fitted workflow (`workflow.transform`), its model
in eager mode and a full sort of the scores. What the served ensemble must answer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from training import prepared, run_dir


def score_events(run: Path, events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (sequence keys, next-item scores [B, catalog], item codes the model saw [B, L])."""
    import nvtabular as nvt

    model, _ = run_dir.load_model(run)
    data = Path(run) / run_dir.DATA
    rows = nvt.Workflow.load(str(data / prepared.WORKFLOW_DIR)).transform(events.reset_index(drop=True))
    spec = model.spec
    batch = {}
    for name in spec.list_columns:
        lists = rows[name].to_list()
        padded = np.zeros((len(lists), max(len(values) for values in lists)),
                          dtype=np.float32 if name in spec.continuous else np.int64)
        for i, values in enumerate(lists):
            padded[i, : len(values)] = values
        batch[name] = torch.from_numpy(padded)
    for name in spec.context_columns:
        batch[name] = torch.from_numpy(rows[name].to_numpy().astype(np.float32 if name in spec.context_continuous else np.int64))
    with torch.no_grad():
        scores = model.next_item_scores(batch).float().numpy()
    key = prepared.load_summary(data)["sequence_key"]
    return rows[key].to_numpy(), scores, batch[spec.item].numpy()


def recommend(run: Path, events: pd.DataFrame, k: int, exclude_seen: bool) -> dict:
    """session id -> (original item ids, scores), best first; ties go to the lower item code."""
    keys, scores, seen = score_events(run, events)
    if exclude_seen:
        np.put_along_axis(scores, seen, -np.inf, axis=1)
    vocabulary = prepared.item_vocabulary(Path(run) / run_dir.DATA)
    codes = np.arange(scores.shape[1])
    out = {}
    for session, row in zip(keys, scores):
        best = np.lexsort((codes, -row))[:k]
        out[session] = (vocabulary.reindex(best).tolist(), row[best])
    return out
