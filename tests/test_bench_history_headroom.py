"""bench.history_headroom: scorers that know the generator must beat what is fitted on the data
(sequential rules), the user's history must lift them where users have taste, and the clock where
day parts have categories; neither where the generator has no such signal."""
from __future__ import annotations

import pytest

from bench.history_headroom import score_split
from training import prepare
from training.baselines import fit_baseline
from training.batches import SequenceData
from training.data.datasets import synthetic
from training.evaluate import evaluate_scores
from training.model.features import feature_spec

SETTINGS = dict(n_events=20_000, n_users=400, n_items=1000, n_categories=50, follow_prob=0.2, mean_session_length=5, seed=8)


def _prepared(folder, config):
    synthetic.generate_events(config).to_parquet(folder / "events.parquet")
    (folder / "mapping.yaml").write_text(synthetic.mapping_yaml())
    prepare.run(prepare.PrepareArgs(dataset=str(folder / "events.parquet"), mapping=folder / "mapping.yaml",
                                    view="session-aware", split="loo", max_length=50, out=folder / "prepared"))
    return folder / "prepared"


@pytest.mark.filterwarnings("ignore")
def test_history_and_clock_lift_the_generators_own_scores_only_where_they_carry_signal(tmp_path):
    signal = synthetic.SyntheticConfig(**SETTINGS, user_taste=0.9, taste_categories=4, daypart_taste=0.3)
    (tmp_path / "signal").mkdir()
    prepared = _prepared(tmp_path / "signal", signal)
    scores = score_split(prepared, signal)
    ndcg = {name: scores[name]["all"]["ndcg@20"] for name in scores}
    spec = feature_spec(prepared)
    rules = evaluate_scores(fit_baseline("sequential_rules", SequenceData(prepared, "train", spec)),
                            SequenceData(prepared, "test", spec), (20,), protocol="all")
    assert ndcg["session"] > 1.1 * rules["ndcg@20"]  # knowing the successors beats counting them
    assert ndcg["history"] > 1.03 * ndcg["session"] and ndcg["history+clock"] > 1.03 * ndcg["session+clock"]
    assert ndcg["session+clock"] > 1.03 * ndcg["session"]

    plain = synthetic.SyntheticConfig(**SETTINGS)
    (tmp_path / "plain").mkdir()
    scores = score_split(_prepared(tmp_path / "plain", plain), plain)
    assert set(scores) == {"session", "history"}
    assert scores["history"]["all"]["ndcg@20"] == pytest.approx(scores["session"]["all"]["ndcg@20"], rel=0.02)
