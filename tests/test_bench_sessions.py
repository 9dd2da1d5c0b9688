"""bench.sessions: the baselines and a config on the same prepared splits, both protocols, one
table; each row's metrics are those of training.baselines / training.evaluate on the test split."""
from __future__ import annotations

import json
import subprocess
import warnings

import pytest

from tests.conftest import PYTHON, ROOT


@pytest.fixture(scope="module")
def small_sessions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_sessions")
    events, prepared = folder / "events", folder / "prepared"
    for command in (["-m", "training.data.datasets.sessions", "--out", str(events), "--items", "6000", "--train-sessions", "1500",
                     "--valid-sessions", "200", "--test-sessions", "200"],
                    ["-m", "training.prepare", "--dataset", str(events / "train.parquet"), "--valid-events", str(events / "valid.parquet"),
                     "--test-events", str(events / "test.parquet"), "--mapping", str(events / "mapping.yaml"), "--out", str(prepared)]):
        completed = subprocess.run([PYTHON, *command], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
    return prepared


def _bench(prepared, out, label, *args):
    """bench.sessions run on `prepared`: its completed process and its result rows (the result file removed)."""
    completed = subprocess.run([PYTHON, "-m", "bench.sessions", "--data", str(prepared), "--label", label, "--out", str(out), *args],
                               cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result_file = ROOT / "bench" / "results" / f"sessions_{label}.json"
    rows = json.loads(result_file.read_text())["rows"]
    result_file.unlink()
    return completed, rows


def test_one_table_of_baselines_and_a_config_under_both_protocols(small_sessions, tmp_path):
    from training import run_dir
    from training.baselines import fit_baseline
    from training.batches import SequenceData
    from training.evaluate import evaluate, evaluate_scores
    from training.model.features import feature_spec

    label = "pytest_bench_sessions"
    completed, rows = _bench(small_sessions, tmp_path, label, "--baselines", "most_popular,sequential_rules",
                             "--budget-minutes", "0.05", "train.epochs=1", "model.d_model=16")
    rows = {row["name"]: row for row in rows}
    assert list(rows) == ["most_popular", "sequential_rules", "gpt2_session"]
    assert "| gpt2_session |" in completed.stdout and "all NDCG@20" in completed.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = feature_spec(small_sessions)
    train, test = SequenceData(small_sessions, "train", spec), SequenceData(small_sessions, "test", spec)
    model, _ = run_dir.load_model(tmp_path / label / "gpt2_session")
    for protocol in ("all", "last"):
        rules = evaluate_scores(fit_baseline("sequential_rules", train), test, (10, 20), protocol=protocol)
        assert rows["sequential_rules"][protocol]["ndcg@20"] == pytest.approx(rules["ndcg@20"])
        ours = evaluate(model, test, (10, 20), protocol=protocol)
        assert rows["gpt2_session"][protocol]["hr@10"] == pytest.approx(ours["hr@10"])
    assert rows["sequential_rules"]["all"]["hr@20"] > rows["most_popular"]["all"]["hr@20"]
    assert rows["gpt2_session"]["cpu_s"] > 0 and rows["gpt2_session"]["train_cpu_s"] > 0


def test_protocols_choose_the_columns_and_an_unknown_one_is_refused_in_one_line(small_sessions, tmp_path):
    label = "pytest_bench_sessions_last"
    completed, rows = _bench(small_sessions, tmp_path, label, "--baselines", "most_popular", "--configs", "", "--protocols", "last")
    assert [row["name"] for row in rows] == ["most_popular"] and "last" in rows[0] and "all" not in rows[0]
    assert "last NDCG@20" in completed.stdout and "all NDCG@20" not in completed.stdout
    refused = subprocess.run([PYTHON, "-m", "bench.sessions", "--data", str(small_sessions), "--label", label, "--out", str(tmp_path),
                              "--protocols", "last,every"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and refused.stderr.strip() == "sessions: --protocols: expected some of all, last, got 'last,every'"


def test_a_config_may_carry_its_own_overrides_lists_included():
    from bench.sessions import config_list

    variant = "gpt2_session+model.history=prefix+model.exclude_features=[hour_sin_list,hour_cos_list]"
    assert config_list(f"gpt2_session,{variant},,bert_mlm") == ["gpt2_session", variant, "bert_mlm"]
