"""Offline answers for raw events: the fitted workflow's request-time transform (plain data,
`training.data.request_transform`, as the served transform step runs it), the run's model in eager
mode and a full sort of the scores. What the served ensemble must answer; reads no pickle."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from training.data import prepared, request_transform
from training import run_dir

SCORE_VALUES = 1 << 25  # next-item scores held at once, [prefixes x catalog] (128 MB of float32)


def score_events(run: Path, events: pd.DataFrame, model=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (sequence keys, next-item scores [B, catalog], item codes the model saw [B, L]);
    `model`: the run's model, already loaded. A session-aware model: one row per user, its
    current session with its earlier events (`request_transform.current_sessions`), keyed by user."""
    model = model if model is not None else run_dir.load_model(run)[0]
    keys, rows, kept = request_transform.transform_events(Path(run) / run_dir.DATA, events, history=model.history is not None)
    width = int(kept.max())  # lists come padded to the workflow's length: cut the padding every row shares
    spec = model.spec
    batch = {name: torch.from_numpy(rows[name][:, :width]) for name in spec.list_columns}
    batch.update({name: torch.from_numpy(rows[name][:, 0]) for name in spec.context_columns})
    if model.history is not None:  # the user's earlier events, as the transform read them
        batch[spec.history] = torch.from_numpy(rows[spec.history])
    with torch.no_grad():
        scores = model.next_item_scores(batch).float().numpy()
    return keys, scores, batch[spec.item].numpy()


def top_items(run: Path, events: pd.DataFrame, k: int, exclude_seen: bool, model=None) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """-> (sequence keys, each session's k best item codes, their scores), best first; ties to the lower code."""
    keys, scores, seen = score_events(run, events, model)
    return (keys, *best_items(scores, seen, k, exclude_seen))


def best_items(scores: np.ndarray, seen: np.ndarray, k: int, exclude_seen: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each row's k best codes and their scores; with exclude_seen, never the row's `seen` codes."""
    if exclude_seen:
        np.put_along_axis(scores, seen, -np.inf, axis=1)
    best = best_codes(scores, k)
    return best, [row[codes] for row, codes in zip(scores, best)]


@torch.no_grad()
def top_items_every_position(run: Path, events: pd.DataFrame, k: int, exclude_seen: bool, model=None):
    """The answer after every event of every session, each as `top_items` answers the session cut
    there. -> (sequence keys, per answer: its session's index in keys, events seen, k best codes, scores),
    by session then events seen. Causal bodies: one forward per session answers every prefix the model
    reads whole; other bodies and longer prefixes go as batched prefix rows. Scores SCORE_VALUES at a time."""
    from training.evaluate import SCORE_ROWS, position_scores, score_workspace, states_answer_prefixes

    model = model if model is not None else run_dir.load_model(run)[0]
    if model.history is not None:
        raise ValueError(f"run {run}: the answer after every event is not computed for a model that reads a user's earlier "
                         f"sessions (model.history={model.config.history!r}); ask for each user's current session")
    data, spec = Path(run) / run_dir.DATA, model.spec
    transform = request_transform.load(data)
    window = int(transform["max_events"])  # a prefix's last events the transform hands the model (and seen items)
    longest = int(events.groupby(transform["sequence_key"], sort=False).size().max())
    keys, columns, lengths = request_transform.transform_events(data, events, keep=longest, history=False)
    context = {name: columns[name][:, 0] for name in spec.context_columns}
    score_rows = max(1, min(SCORE_ROWS, SCORE_VALUES // spec.item_cardinality))  # also bounds a chunk's prefix rows
    sessions_of, seen_of, best, scores = [], [], [], []

    def keep_best(session: np.ndarray, seen_n: np.ndarray, chunk_scores: torch.Tensor, seen: torch.Tensor) -> None:
        chunk_best, chunk_values = best_items(chunk_scores.float().numpy(), seen.numpy(), k, exclude_seen)
        sessions_of.append(session), seen_of.append(seen_n), best.extend(chunk_best), scores.extend(chunk_values)

    whole = min(window, model.config.max_length) if states_answer_prefixes(model) else 0
    if whole:
        batch = {name: torch.from_numpy(columns[name][:, :whole]) for name in spec.list_columns}
        batch.update({name: torch.from_numpy(values) for name, values in context.items()})
        workspace = score_workspace(model, score_rows)
        for row, position, chunk_scores, prefix_items in position_scores(model, batch, with_last=True, score_rows=score_rows,
                                                                         workspace=workspace):
            keep_best(row.numpy(), position.numpy() + 1, chunk_scores, prefix_items)
    rest = np.maximum(lengths - whole, 0)
    sessions = np.repeat(np.arange(len(keys)), rest)
    seen_events = np.arange(len(sessions)) - np.repeat(np.cumsum(rest) - rest, rest) + whole + 1
    for first in range(0, len(sessions), score_rows):
        session, seen_n = sessions[first:first + score_rows], seen_events[first:first + score_rows]
        start, kept = np.maximum(seen_n - window, 0), np.minimum(seen_n, window)
        offsets = np.arange(int(kept.max()))
        real = offsets[None, :] < kept[:, None]
        index = np.where(real, start[:, None] + offsets[None, :], 0)
        batch = {name: torch.from_numpy(np.where(real, columns[name][session[:, None], index], 0).astype(columns[name].dtype))
                 for name in spec.list_columns}
        batch.update({name: torch.from_numpy(values[session]) for name, values in context.items()})
        keep_best(session, seen_n, model.next_item_scores(batch), batch[spec.item])
    session = np.concatenate(sessions_of) if sessions_of else np.zeros(0, np.int64)
    seen_n = np.concatenate(seen_of) if seen_of else np.zeros(0, np.int64)
    order = np.lexsort((seen_n, session))
    return keys, session[order], seen_n[order], [best[i] for i in order], [scores[i] for i in order]


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
