"""Ranking metrics against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from training.metrics import ranking_metrics, target_ranks


def test_ranks_count_higher_and_tied_scores_and_special_targets_miss():
    scores = torch.tensor([[float("-inf"), 0.1, 0.9, 0.5, 0.5], [float("-inf"), 0.3, 0.2, 0.1, 0.0]])
    assert target_ranks(scores, torch.tensor([3, 1])).tolist() == [2, 0]  # tie with item 4 counts against the target
    assert target_ranks(scores, torch.tensor([0, 4])).tolist() == [5, 3]  # -inf target: never recommended


def test_exclude_seen_removes_sequence_items_from_the_ranking():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.1]])
    assert target_ranks(scores, torch.tensor([3])).tolist() == [2]
    assert target_ranks(scores, torch.tensor([3]), exclude=torch.tensor([[1, 2]])).tolist() == [0]
    assert target_ranks(scores, torch.tensor([3]), exclude=torch.tensor([[3, 0]])).tolist() == [5]


@pytest.mark.parametrize("rank,k,ndcg,hit,mrr", [
    (0, 5, 1.0, 1.0, 1.0),
    (2, 5, 1 / math.log2(4), 1.0, 1 / 3),
    (4, 5, 1 / math.log2(6), 1.0, 1 / 5),
    (5, 5, 0.0, 0.0, 0.0),
    (9, 10, 1 / math.log2(11), 1.0, 1 / 10),
])
def test_metric_values(rank, k, ndcg, hit, mrr):
    values = {name: float(v[0]) for name, v in ranking_metrics(torch.tensor([rank]), ks=(k,)).items()}
    assert values[f"ndcg@{k}"] == pytest.approx(ndcg)
    assert values[f"recall@{k}"] == values[f"hr@{k}"] == hit
    assert values[f"mrr@{k}"] == values[f"map@{k}"] == pytest.approx(mrr)
    assert values[f"precision@{k}"] == pytest.approx(hit / k)


def test_means_over_rows():
    metrics = ranking_metrics(torch.tensor([0, 1, 30]), ks=(10,))
    assert metrics["hr@10"].mean().item() == pytest.approx(2 / 3)
    assert metrics["ndcg@10"].mean().item() == pytest.approx((1 + 1 / math.log2(3)) / 3)


def test_ranks_counted_a_few_rows_at_a_time_equal_the_whole_comparison():
    from training.metrics import RANK_ROWS

    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 5, (2 * RANK_ROWS + 7, 30), generator=generator).float()  # ties, a ragged last chunk
    targets = torch.randint(0, 30, (len(scores),), generator=generator)
    whole = (scores >= scores.gather(1, targets[:, None])).sum(1) - 1
    assert torch.equal(target_ranks(scores, targets), whole)
    assert target_ranks(scores[:0], targets[:0]).shape == (0,)
