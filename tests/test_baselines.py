"""The reference recommenders that learning tests compare models with (training.baselines),
checked against plain-Python counts on the synthetic data."""
from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch

from training.baselines import first_order_transitions, most_popular
from training.codes import SPECIAL_CODES
from training.data import SequenceData
from training.evaluate import evaluate_scores
from training.features import feature_spec


@pytest.fixture(scope="module")
def splits(prepared_synthetic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = feature_spec(prepared_synthetic)
    return SequenceData(prepared_synthetic, "train", spec), SequenceData(prepared_synthetic, "test", spec)


def _sequences(data: SequenceData) -> list[list[int]]:
    items = data.values[data.spec.item].tolist()
    return [items[start:end] for start, end in zip(data.offsets[:-1], data.offsets[1:])]


def _ranking(counts: Counter, catalog: int) -> list[int]:
    """Real item codes by count, ties to the lower code."""
    return sorted(range(SPECIAL_CODES["first_value"], catalog), key=lambda code: (-counts[code], code))


def test_most_popular_ranks_items_by_training_count(splits):
    train, test = splits
    counts = Counter(item for sequence in _sequences(train) for item in sequence)
    batch = next(test.batches(8, drop_last_event=True))
    scores = most_popular(train)(batch)
    assert scores.shape == (8, train.spec.item_cardinality)
    assert torch.isinf(scores[:, :SPECIAL_CODES["first_value"]]).all()  # pad, null and OOV are never recommended
    assert scores[0].argsort(descending=True)[:50].tolist() == _ranking(counts, train.spec.item_cardinality)[:50]


def test_transitions_rank_the_last_items_successors_by_count_then_the_popular_items(splits):
    train, test = splits
    catalog = train.spec.item_cardinality
    popular = _ranking(Counter(item for sequence in _sequences(train) for item in sequence), catalog)
    successors: dict[int, Counter] = {}
    for sequence in _sequences(train):
        for item, successor in zip(sequence, sequence[1:]):
            successors.setdefault(item, Counter())[successor] += 1
    batch = next(test.batches(64, drop_last_event=True))
    scores = first_order_transitions(train)(batch)
    for row, sequence in zip(scores, batch[train.spec.item].tolist()):
        last = [item for item in sequence if item != SPECIAL_CODES["pad"]][-1]
        followed = {code: n for code, n in successors.get(last, Counter()).items() if code >= SPECIAL_CODES["first_value"]}
        seen = sorted(followed, key=lambda code: (-followed[code], popular.index(code)))  # equal counts: the more popular first
        expected = seen + [code for code in popular if code not in followed]
        assert row.argsort(descending=True)[:20].tolist() == expected[:20]


def test_a_baseline_is_ranked_like_the_model(splits):
    """evaluate_scores takes any scorer: an oracle that scores the target highest gets every hit."""
    train, test = splits
    targets = iter([batch["targets"] for batch in test.batches(100, drop_last_event=True)])

    def oracle(batch):
        scores = torch.zeros(len(batch[train.spec.item]), train.spec.item_cardinality)
        return scores.scatter(1, next(targets)[:, None], 1.0)
    metrics = evaluate_scores(oracle, test, (1, 10), batch_size=100)
    assert metrics["hr@1"] == metrics["ndcg@10"] == 1.0
