"""Ties count against the target, so an offline hit is an item every top-k list holds: the
served one (`best_items`) and the offline one (`training.recommend`), both ties to the lower code."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from export.torchscript import best_items
from training import recommend
from training.metrics import ranking_metrics, target_ranks
from training.model.next_item import FIRST_ITEM_CODE

CATALOG = 50


def test_a_model_that_scores_every_item_alike_gets_no_hit():
    scores = torch.zeros(4, CATALOG)
    scores[:, :FIRST_ITEM_CODE] = float("-inf")  # as the model scores special codes
    targets = torch.tensor([FIRST_ITEM_CODE, 10, 27, CATALOG - 1])
    ranks = target_ranks(scores, targets)
    assert ranks.tolist() == [CATALOG - FIRST_ITEM_CODE - 1] * 4  # last among the real items
    metrics = ranking_metrics(ranks, ks=(10,))
    assert metrics["hr@10"].sum() == 0 and metrics["ndcg@10"].sum() == 0 and metrics["mrr@10"].sum() == 0


def test_a_tied_target_ranks_after_every_item_scored_as_high():
    scores = torch.tensor([[float("-inf"), 0.9, 0.5, 0.5, 0.5, 0.1, 0.9]])
    # two higher (0.9) and two other 0.5s: rank 4, whichever code the target has among the tied
    assert target_ranks(scores, torch.tensor([2])).tolist() == target_ranks(scores, torch.tensor([4])).tolist() == [4]
    assert target_ranks(scores, torch.tensor([1])).tolist() == [1]  # tied with item 6 only
    assert target_ranks(scores, torch.tensor([5])).tolist() == [5]  # no tie: the ones above it
    assert ranking_metrics(target_ranks(scores, torch.tensor([3])), ks=(4, 5))["hr@4"].item() == 0


def _tied_scores(rows: int) -> torch.Tensor:
    """Few distinct values (about four items each), so ties are everywhere, also at the k-th place."""
    scores = torch.randint(0, 12, (rows, CATALOG), generator=torch.Generator().manual_seed(5)).float()
    scores[:, :FIRST_ITEM_CODE] = float("-inf")
    return scores


@pytest.mark.parametrize("k", [1, 5, 10])
def test_an_offline_hit_is_in_the_served_top_k(k):
    scores = _tied_scores(16)
    served, _ = best_items(scores, k)
    hits = 0
    for target in range(FIRST_ITEM_CODE, CATALOG):
        hit = target_ranks(scores, torch.full((16,), target)) < k
        in_served = (served == target).any(1)
        assert not (hit & ~in_served).any(), (target, k)
        hits += int(hit.sum())
    assert hits > 0  # the statement is not vacuous


@pytest.mark.parametrize("k", [1, 5, 10])
def test_an_offline_hit_is_in_training_recommends_top_k(k, monkeypatch):
    scores = _tied_scores(16)
    sessions = np.array([f"s{row}" for row in range(16)])
    no_seen_items = np.zeros((16, 1), dtype=np.int64)
    monkeypatch.setattr(recommend, "score_events", lambda run, events, model=None: (sessions, scores.numpy().copy(), no_seen_items))
    monkeypatch.setattr(recommend.prepared, "item_vocabulary", lambda data: pd.Series([f"item{code}" for code in range(CATALOG)]))
    offline = recommend.recommend("unused-run", pd.DataFrame(), k, exclude_seen=False)
    hits = 0
    for target in range(FIRST_ITEM_CODE, CATALOG):
        for row, rank in enumerate(target_ranks(scores, torch.full((16,), target)).tolist()):
            if rank < k:
                assert f"item{target}" in offline[f"s{row}"][0], (row, target, k)
                hits += 1
    assert hits > 0


def test_the_tied_scores_tie_at_the_k_th_place():
    """The two tests above would pass on scores without ties at the cut; these have them."""
    scores = _tied_scores(16)
    for k in (1, 5, 10):
        kth = scores.sort(dim=1, descending=True).values[:, k - 1 : k]
        assert ((scores == kth).sum(1) > 1).any(), k
