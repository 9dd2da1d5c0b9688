"""What the served ensemble must answer, computed offline in Python: the run's fitted
workflow (`workflow.transform`), its model in eager mode and a full sort of the scores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from training import prepared, run_dir, views
from training.events import validate_events


def held_out_sessions(events: pd.DataFrame, key: str, time: str, n: int, seed: int = 0) -> pd.DataFrame:
    """Events of `n` random sequences, each without its last event (the held-out target)."""
    keys = events[key].drop_duplicates().sample(n, random_state=seed)
    chosen = views.sort_events(events[events[key].isin(keys)], key, time)
    last = chosen.groupby(key, sort=False).cumcount(ascending=False) == 0
    return chosen[~last.to_numpy()].reset_index(drop=True)


def ml1m_events() -> pd.DataFrame:
    from training.datasets import movielens

    events = validate_events(movielens.load_events("ml-1m"), movielens.COLUMNS, "ml-1m")
    return views.filter_items(events, movielens.COLUMNS, 5)


def offline_recommendations(run: Path, events: pd.DataFrame, k: int, exclude_seen: bool) -> dict:
    """session id -> (item ids, scores), best first; ties go to the lower item code."""
    import nvtabular as nvt

    model, _ = run_dir.load_model(run)
    data = Path(run) / run_dir.DATA
    summary = prepared.load_summary(data)
    rows = nvt.Workflow.load(str(data / prepared.WORKFLOW_DIR)).transform(events.reset_index(drop=True))
    spec = model.spec
    batch = {}
    for name in spec.list_columns:
        lists = rows[name].to_list()
        width = max(len(values) for values in lists)
        dtype = np.float32 if name in spec.continuous else np.int64
        padded = np.zeros((len(lists), width), dtype=dtype)
        for i, values in enumerate(lists):
            padded[i, : len(values)] = values
        batch[name] = torch.from_numpy(padded)
    for name in spec.context_columns:
        batch[name] = torch.from_numpy(rows[name].to_numpy().astype(np.float32 if name in spec.context_continuous else np.int64))
    with torch.no_grad():
        scores = model.next_item_scores(batch).numpy()
    if exclude_seen:
        for i, codes in enumerate(batch[spec.item].numpy()):
            scores[i, codes] = -np.inf
    vocabulary = prepared.item_vocabulary(data)
    codes = np.arange(scores.shape[1])
    out = {}
    for session, row in zip(rows[summary["sequence_key"]], scores):
        best = np.lexsort((codes, -row))[:k]
        out[session] = (vocabulary.reindex(best).tolist(), row[best])
    return out
