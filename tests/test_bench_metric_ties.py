"""bench.metric_ties scores one run under the old tie rule (ties in the target's favour) and the
new one (ties against it), side by side on the same rows."""
from __future__ import annotations

import json

import pytest


def test_the_tie_rule_bench_shows_what_a_constant_score_gained_and_what_a_model_keeps(synthetic_runs, tmp_path, capsys):
    from bench import metric_ties

    out = tmp_path / "metric_ties.json"
    metric_ties.main(["--run", str(synthetic_runs[0]), "--out", str(out)])
    results = json.loads(out.read_text())["results"]
    from training import run_dir
    from training.batches import SequenceData
    from training.model.next_item import FIRST_ITEM_CODE

    model, _ = run_dir.load_model(synthetic_runs[0])
    test = SequenceData(run_dir.data_dir(synthetic_runs[0]), "test", model.spec)
    rankable = float((test.values[model.spec.item][test.starts + test.lengths - 1] >= FIRST_ITEM_CODE).mean())
    assert 0.5 < rankable < 1.0  # items rare in training are held-out OOV targets, a miss under any rule
    # the old rule puts every rankable target first against a constant score
    assert results["constant"]["old"]["hr@10"] == pytest.approx(rankable, abs=1e-5)
    assert results["constant"]["old"]["ndcg@10"] == pytest.approx(rankable, abs=1e-5)
    assert results["constant"]["new"]["hr@10"] == 0.0 and results["constant"]["new"]["ndcg@10"] == 0.0
    for name in ("model", "most_popular"):  # untied scores: the rule changes nothing
        assert results[name]["old"] == pytest.approx(results[name]["new"]), name
    assert results["most_popular"]["new"]["hr@10"] > 0
    assert "constant" in capsys.readouterr().out
