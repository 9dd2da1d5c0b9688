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


def test_sequential_rules_weigh_each_later_item_by_one_over_its_distance(splits):
    """SR by hand: for every pair (i, j) with j at most `steps` events after i in a training row,
    add 1/distance to the rule i -> j; keep each item's `prune` strongest rules."""
    from training.baselines import rule_weights, sequential_rules

    train, test = splits
    steps, prune = 3, 4
    expected: dict[int, Counter] = {}
    for sequence in _sequences(train):
        for position, item in enumerate(sequence):
            for distance in range(1, steps + 1):
                if position + distance < len(sequence):
                    expected.setdefault(item, Counter())[sequence[position + distance]] += 1.0 / distance
    rules = rule_weights(train, steps).to_dense()
    for item, followers in list(expected.items())[:50]:
        for follower, weight in followers.items():
            assert rules[item, follower].item() == pytest.approx(weight)
    assert rules.sum().item() == pytest.approx(sum(sum(c.values()) for c in expected.values()))
    pruned = rule_weights(train, steps, prune).to_dense()
    assert int((pruned > 0).sum(1).max()) <= prune
    for item, followers in list(expected.items())[:50]:
        strongest = sorted(followers.values(), reverse=True)[:prune]
        assert sorted(pruned[item][pruned[item] > 0].tolist(), reverse=True) == pytest.approx(strongest)
    batch = next(test.batches(32, drop_last_event=True))
    scores = sequential_rules(train, steps, prune)(batch)
    for row, sequence in zip(scores, batch[train.spec.item].tolist()):
        last = [item for item in sequence if item != SPECIAL_CODES["pad"]][-1]
        ruled = pruned[last] > 0
        assert bool((row[ruled].min() > row[~ruled].max()) if ruled.any() else True)  # every rule above every fallback


def test_the_baselines_command_prints_each_baselines_metrics(prepared_synthetic):
    import json
    import subprocess

    from tests.conftest import PYTHON, ROOT

    shown = subprocess.run([PYTHON, "-m", "training.baselines", "--data", str(prepared_synthetic), "--protocol", "all"],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [line["baseline"] for line in lines] == ["most_popular", "transitions", "sequential_rules", "session_knn"]
    assert all(line["protocol"] == "all" for line in lines)
    assert lines[2]["hr@10"] > lines[0]["hr@10"]  # the synthetic rows are a chain: rules beat popularity
    bad = subprocess.run([PYTHON, "-m", "training.baselines", "--data", str(prepared_synthetic), "--baselines", "knn"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip() == (
        "baselines: --baselines: expected names of ['most_popular', 'transitions', 'sequential_rules', 'session_knn'], "
        "got ['knn']")


def _hand_made(sequences: list[list[int]], catalog: int) -> SequenceData:
    """A training split of the given item-code rows (no side features)."""
    from types import SimpleNamespace

    import numpy as np

    data = object.__new__(SequenceData)
    data.spec = SimpleNamespace(item="item", item_cardinality=catalog, list_columns=["item"], context_columns=[],
                                continuous=[], context_continuous=[])
    data.lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    data.offsets = np.concatenate([[0], np.cumsum(data.lengths)])
    data.starts = data.offsets[:-1]
    data.values = {"item": np.array([i for s in sequences for i in s], dtype=np.int64)}
    data.context = {}
    return data


def test_session_knn_scores_items_by_the_similarity_of_the_nearest_sessions_holding_them():
    """By hand: the row [3, 4] weighs 4 (last) 1.0 and 3 0.9; cosine with the binary sessions:
    A=[3,4,5] (0.9+1)/sqrt(2*3), B=[4,6] 1/sqrt(2*2), D=[3,9,9] 0.9/sqrt(2*2), C=[7,8] 0."""
    import math

    from training.baselines import decay_weights, session_knn

    train = _hand_made([[3, 4, 5], [4, 6], [7, 8], [3, 9, 9]], catalog=10)
    assert decay_weights(torch.tensor([[5, 6, 7, 0]]), last=2).tolist() == [[0.0, 0.5, 1.0, 0.0]]
    a, b, d = 1.9 / math.sqrt(6), 0.5, 0.45
    row = {"item": torch.tensor([[3, 4, 0]])}
    two = session_knn(train, neighbours=2)(row)[0]
    assert two[[3, 4, 5, 6]].tolist() == pytest.approx([1 + a, 1 + a + b, 1 + a, 1 + b])
    assert bool((two[[7, 8, 9]] < 1).all()) and torch.isinf(two[:3]).all()  # the rest: popularity below every neighbour's item
    repeated = session_knn(train, neighbours=2)({"item": torch.tensor([[4, 3, 4]])})[0]  # an item counts once, at its latest weight
    assert repeated.tolist() == pytest.approx(two.tolist())
    three = session_knn(train, neighbours=3)(row)[0]
    assert three[9].item() == pytest.approx(1 + d) and three[3].item() == pytest.approx(1 + a + d)
