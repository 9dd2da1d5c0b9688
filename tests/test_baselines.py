"""The reference recommenders that learning tests compare models with (training.baselines),
checked against plain-Python counts on the synthetic data."""
from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from training.baselines import first_order_transitions, most_popular
from training.data.codes import SPECIAL_CODES
from training.batches import SequenceData
from training.evaluate import evaluate_scores
from training.model.features import feature_spec


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
    assert [line["baseline"] for line in lines] == ["most_popular", "transitions", "sequential_rules", "session_knn", "vstan"]
    assert all(line["rows"] == lines[0]["rows"] and line["fit_s"] >= 0 and line["score_s"] >= 0 for line in lines)
    assert all(line["protocol"] == "all" for line in lines)
    assert lines[2]["hr@10"] > lines[0]["hr@10"]  # the synthetic rows are a chain: rules beat popularity
    bad = subprocess.run([PYTHON, "-m", "training.baselines", "--data", str(prepared_synthetic), "--baselines", "knn"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip() == (
        "baselines: --baselines: expected names of ['most_popular', 'transitions', 'sequential_rules', 'session_knn', "
        "'vstan'], "
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


def _padded(rows: list[list[int]]) -> dict:
    width = max(map(len, rows))
    return {"item": torch.tensor([row + [SPECIAL_CODES["pad"]] * (width - len(row)) for row in rows])}


def test_session_knn_samples_the_most_recent_sessions_sharing_an_item():
    """Row [3]: all three sessions share item 3; with sample 2 only the two most recent are
    candidates: by time (30 and 20) 4 and 6 are scored and 5 (time 10) is not; by row order
    (no times) 5 and 6 are scored and 4 (the first row) is not."""
    from training.baselines import session_knn

    train = _hand_made([[3, 4], [3, 5], [3, 6]], catalog=8)
    row = _padded([[3]])
    timed = session_knn(train, sample=2, session_times=[30, 10, 20])(row)[0]
    assert (timed[[3, 4, 6]] > 1).all() and timed[5] < 1
    ordered = session_knn(train, sample=2)(row)[0]
    assert (ordered[[3, 5, 6]] > 1).all() and ordered[4] < 1
    everyone = session_knn(train, sample=None)(row)[0]
    assert (everyone[[3, 4, 5, 6]] > 1).all() and everyone[7] < 1


def test_session_knn_breaks_equal_similarities_towards_the_more_recent_session():
    from training.baselines import session_knn

    train = _hand_made([[3, 4], [3, 5], [3, 6]], catalog=8)
    nearest = session_knn(train, neighbours=1, session_times=[30, 10, 20])(_padded([[3]]))[0]
    assert nearest[4] > 1 and nearest[5] < 1 and nearest[6] < 1


def test_vstan_weighs_position_recency_neighbour_position_match_and_idf():
    """By hand, lambdas 1 (days for the recency): the row [4, 3] weighs 4 e^-1 and 3 e^0,
    norm sqrt(1 + e^-2); A = [3, 4, 5] (day 0) and B = [4, 6] (day 1, the latest):
      sim A = (1 + e^-1) / (norm sqrt 3) x e^-1 (a day older),  sim B = e^-1 / (norm sqrt 2);
    in A the last item of the row is at 2 (q*), the last of A's items in the row at 2 of 2 (match 1);
    in B q* = 1 and the match is at 1 of 2 (e^-1); idf weight 1 + log(2 sessions / events):
      3: sim A e^-1 (1 + log 2), 4: sim A + sim B e^-1 (log 1 = 0), 5: like 3, 6: sim B e^-1 e^-1 (1 + log 2)."""
    from training.baselines import vstan

    train = _hand_made([[3, 4, 5], [4, 6]], catalog=8)
    e, idf = math.exp(-1), 1 + math.log(2)
    norm = math.sqrt(1 + e * e)
    sim_a, sim_b = (1 + e) / (norm * math.sqrt(3)) * e, e / (norm * math.sqrt(2))
    ones = dict(lambda_spw=1, lambda_snh=1, lambda_inh=1, lambda_ipw=1, lambda_idf=1)
    scores = vstan(train, session_times=[0, 86_400], **ones)(_padded([[4, 3]]))[0]
    assert scores[[3, 4, 5, 6]].tolist() == pytest.approx([sim_a * e * idf, sim_a + sim_b * e, sim_a * e * idf, sim_b * e * e * idf], rel=1e-5)
    assert bool((scores[7] < 0) & (scores[7] > float("-inf"))) and torch.isinf(scores[:3]).all()
    nearest = vstan(train, neighbours=1, session_times=[0, 86_400], **ones)(_padded([[4, 3]]))[0]  # sim A > sim B
    assert nearest[6] < 0 and nearest[5].item() == pytest.approx(sim_a * e * idf, rel=1e-5)
    untimed = vstan(train, **ones)(_padded([[4, 3]]))[0]  # no times: no recency weight
    assert untimed[5].item() == pytest.approx(sim_a / e * e * idf, rel=1e-5)


def test_vstan_orders_the_neighbours_of_a_long_rows_early_items():
    """A 120-event row (an ML-1M history): a neighbour sharing only its first event scores its other
    item about e^-233 (position weight x match weight), one sharing the 5th about e^-225: both below
    float32's range, where they tied at 0 and ranked as if unscored."""
    from training.baselines import vstan

    first = SPECIAL_CODES["first_value"]
    row = list(range(first, first + 120))
    early, later = first + 120, first + 121
    train = _hand_made([[row[0], early], [row[4], later]], catalog=first + 125)
    scores = vstan(train)(_padded([row]))[0]
    assert scores[later] > scores[early] > 0
    # both weights 4 events later (lambda_spw = lambda_ipw = 1.02); approx's absolute tolerance would pass any two
    assert math.log(scores[later].item() / scores[early].item()) == pytest.approx(8 / 1.02, rel=1e-9)


def _random_sessions(seed: int, sessions: int = 80, catalog: int = 30):
    import numpy as np

    rng = np.random.default_rng(seed)
    first = SPECIAL_CODES["first_value"]
    train = [rng.integers(first, catalog, rng.integers(2, 7)).tolist() for _ in range(sessions)]
    rows = [rng.integers(first, catalog, rng.integers(1, 14)).tolist() for _ in range(40)]
    return train, rng.permutation(sessions).astype(float) * 3_600 + rng.random(sessions), rows


def _candidates(sessions, times, row, sample):
    """session-rec: the sessions sharing an item of the row; with a sample, the most recent."""
    shared = [s for s, items in enumerate(sessions) if set(row) & set(items)]
    return shared if sample is None else sorted(shared, key=lambda s: (times[s], s))[-sample:]


def _vsknn_reference(sessions, times, row, neighbours, sample, decay=10):
    """V-SkNN one row at a time, as session-rec loops (weights summed in item order, as a sparse product does)."""
    import numpy as np

    weight = {item: float(np.float32(max(0.0, 1 - (len(row) - p) / decay))) for p, item in enumerate(row, 1)}
    similar = []
    for s in _candidates(sessions, times, row, sample):
        dot = sum(weight[i] for i in sorted(set(row) & set(sessions[s])))
        if dot > 0:
            similar.append((dot / math.sqrt(len(weight) * len(set(sessions[s]))), times[s], s))
    scores = Counter()
    for similarity, _, s in sorted(similar, reverse=True)[:neighbours]:  # equal: the more recent
        for item in set(sessions[s]):
            scores[item] += similarity
    return {item: 1 + value for item, value in scores.items()}


def _vstan_reference(sessions, times, row, neighbours, sample, spw=1.02, snh=5.0, inh=2.05, ipw=1.02, idf=5.0):
    """session-rec's VSKNN_STAN.find_neighbors + score_items for one row (remind, cosine)."""
    weight = {item: math.exp((p - len(row)) / spw) for p, item in enumerate(row, 1)}
    norm = math.sqrt(sum(w * w for w in weight.values()))
    similar = []
    for s in _candidates(sessions, times, row, sample):
        dot = sum(weight[i] for i in set(row) & set(sessions[s]))
        similar.append((dot / (norm * math.sqrt(len(set(sessions[s])))) * math.exp(-(max(times) - times[s]) / (snh * 86_400)), s))
    counts = Counter(item for items in sessions for item in items)
    scores = Counter()
    for similarity, s in sorted(similar, reverse=True)[:neighbours]:
        items = sessions[s]
        last = {item: q for q, item in enumerate(items, 1)}
        star = max(q for q, item in enumerate(items, 1) if item in weight)
        match = math.exp((max(p for p, item in enumerate(row, 1) if item in last) - len(row)) / ipw)
        for item, q in last.items():
            scores[item] += similarity * math.exp(-abs(q - star) / inh) * (1 + idf * math.log(len(sessions) / counts[item])) * match
    return scores


@pytest.mark.parametrize("sample", [None, 6])
def test_sparse_knn_baselines_equal_session_rec_one_row_at_a_time(sample):
    from training.baselines import session_knn, vstan

    sessions, times, rows = _random_sessions(seed=1)
    train = _hand_made(sessions, catalog=30)
    for scorer, reference, scored in ((session_knn(train, neighbours=5, sample=sample, session_times=times), _vsknn_reference, 1.0),
                                      (vstan(train, neighbours=5, sample=sample, session_times=times), _vstan_reference, 0.0)):
        scores = scorer(_padded(rows))
        for row, got in zip(rows, scores):
            expected = reference(sessions, times, row, 5, sample)
            assert {i for i in range(30) if got[i] > scored} == set(expected), (reference.__name__, row)
            assert [got[i].item() for i in sorted(expected)] == pytest.approx([expected[i] for i in sorted(expected)], rel=1e-5)


def test_sparse_session_knn_equals_the_dense_one():
    """The former dense V-SkNN (every session a candidate, [rows, sessions] similarities): the same
    neighbour scores and the same popularity order below them."""
    import numpy as np
    from scipy import sparse

    from training.baselines import decay_weights, popularity_scores, session_knn

    sessions, _, rows = _random_sessions(seed=2)
    train, catalog, first = _hand_made(sessions, catalog=30), 30, SPECIAL_CODES["first_value"]
    matrix = sparse.csr_matrix((np.ones(len(train.values["item"])), (np.repeat(np.arange(len(train)), train.lengths), train.values["item"])),
                               shape=(len(train), catalog))
    matrix.data[:] = 1.0
    batch = _padded(rows)["item"]
    query = torch.zeros(len(batch), catalog, dtype=torch.float64).scatter_reduce(1, batch, decay_weights(batch).double(), "amax")
    query[:, :first] = 0
    sizes = torch.zeros_like(query).scatter(1, batch, 1.0)[:, first:].sum(1, keepdim=True)
    similarity = torch.from_numpy((sparse.csr_matrix(query.numpy()) @ matrix.T).toarray())
    similarity /= sizes.sqrt() * torch.from_numpy(np.sqrt(np.asarray(matrix.sum(1)).ravel()))[None, :]
    dense = torch.from_numpy((sparse.csr_matrix(similarity.numpy()) @ matrix).toarray())  # every session a neighbour
    ours = session_knn(train, neighbours=len(train), sample=None)(_padded(rows))
    assert torch.equal(ours >= 1, dense > 0)
    assert ours[dense > 0].tolist() == pytest.approx((1 + dense[dense > 0]).tolist(), rel=1e-6)
    popular = popularity_scores(train).expand_as(dense)
    for got, held, order in zip(ours, dense > 0, popular):
        rest = torch.nonzero(~held[first:]).squeeze(1) + first
        assert torch.equal(rest[got[rest].argsort(descending=True, stable=True)], rest[order[rest].argsort(descending=True, stable=True)])


def test_session_start_times_are_each_training_rows_first_event_time(prepared_synthetic, splits):
    """The recency of the kNN baselines: the prepared train split's start-time column, one value per
    SequenceData row (rows of one event are not rows of SequenceData)."""
    from training.data import prepared
    from training.baselines import session_start_times

    train, _ = splits
    frame = prepared.read_split(prepared_synthetic, "train")
    times = session_start_times(prepared_synthetic, train)
    assert len(train) < len(frame) and len(times) == len(train) and (frame["item_id_list"].map(len).to_numpy()[train.rows] == train.lengths).all()
    assert (times == frame["timestamp_first"].to_numpy()[train.rows]).all() and len(set(times.tolist())) > 1
    assert (train.prefixes().rows == np.repeat(train.rows, train.lengths - 1)).all()
