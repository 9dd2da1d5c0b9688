"""Full-catalog ranking metrics for next-item prediction, vectorised in torch.

One relevant item per row (the next item), so Recall@k = HitRate@k, MAP@k = MRR@k and
Precision@k = HitRate@k / k. Ties count against the target: its rank is the number of items
scored strictly higher plus the other items scored the same (a model that scores every item
alike ranks every target last). This agrees with serving, which breaks ties to the lower
code: a hit at k means at most k items score as high as the target, so every top-k list, the
served and the offline one whatever their tie-break, holds it. A target that can never be
recommended (padding, null, OOV: score -inf) is always a miss.
"""
from __future__ import annotations

import torch

DEFAULT_KS = (5, 10, 20)
NAMES = ("ndcg", "recall", "hr", "mrr", "map", "precision")
PROTOCOLS = ("last", "all")  # last: each row's final event; all: every next event from its prefix (session-rec's protocol)
RANK_ROWS = 64  # rows compared with their target at once


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each row's target among all items, ties against it. `exclude` [B, L]
    holds item codes removed from the ranking (e.g. the items already in the sequence): a
    target among them is a miss, as it would never be recommended."""
    if exclude is not None:
        scores = scores.clone()
        rows = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(exclude)
        scores[rows, exclude] = float("-inf")
    target_scores = scores.gather(1, targets[:, None])
    # the higher ones and the tied ones but the target itself; counted a few rows at a time, so the
    # [rows, catalog] comparison never exists whole (at 100k+ items it cost more than the scores)
    ranks = torch.cat([torch.count_nonzero(scores[start:start + RANK_ROWS] >= target_scores[start:start + RANK_ROWS], dim=1)
                       for start in range(0, scores.shape[0], RANK_ROWS)]) - 1 if len(scores) else targets.new_zeros(0)
    never = ~torch.isfinite(target_scores.squeeze(1))
    return torch.where(never, torch.full_like(ranks, scores.shape[1]), ranks)


def ranking_metrics(ranks: torch.Tensor, ks=DEFAULT_KS) -> dict[str, torch.Tensor]:
    """Per-row metric values {f"{name}@{k}": [B]} from 0-based ranks."""
    out = {}
    ranks = ranks.float()
    for k in ks:
        hit = (ranks < k).float()
        out[f"ndcg@{k}"] = hit / torch.log2(ranks + 2)
        out[f"recall@{k}"] = hit
        out[f"hr@{k}"] = hit
        out[f"mrr@{k}"] = hit / (ranks + 1)
        out[f"map@{k}"] = hit / (ranks + 1)
        out[f"precision@{k}"] = hit / k
    return out
