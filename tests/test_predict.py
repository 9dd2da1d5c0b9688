"""python -m training.predict: offline top-k for one's own events, equal to training.recommend
(which the serving tests hold equal to the served ensemble), in chunks of sessions."""
from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PYTHON, ROOT


@pytest.fixture(scope="module")
def held_out_events(prepared_synthetic):
    from training.prepare import raw_events
    from training.views import held_out

    events, _, key = raw_events(prepared_synthetic)
    return held_out(events, key, "timestamp", 30, seed=3)[0], key


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_predictions_in_chunks_equal_the_offline_recommendations(synthetic_runs, held_out_events, exclude_seen):
    from training.predict import predict
    from training.recommend import recommend

    events, key = held_out_events
    predicted = predict(synthetic_runs[0], events, k=7, exclude_seen=exclude_seen, sessions_per_chunk=4)
    expected = recommend(synthetic_runs[0], events, 7, exclude_seen)
    assert list(predicted[key].drop_duplicates()) == list(events[key].drop_duplicates())
    for session, rows in predicted.groupby(key, sort=False):
        ids, scores = expected[session]
        assert rows["rank"].tolist() == list(range(1, 8))
        assert rows["item_id"].tolist() == ids
        np.testing.assert_allclose(rows["score"].to_numpy(), scores, rtol=1e-6)


def test_best_codes_are_a_stable_sorts_first_k():
    from training.recommend import best_codes

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 40)).astype(np.float32)  # many ties
    for row, best in zip(scores, best_codes(scores, 9)):
        assert best.tolist() == np.argsort(-row, kind="stable")[:9].tolist()


def test_the_command_writes_csv_and_refuses_bad_input_in_one_line(synthetic_runs, held_out_events, tmp_path):
    events, key = held_out_events
    events.to_csv(tmp_path / "events.csv", index=False)
    out = tmp_path / "predictions.csv"
    done = subprocess.run([PYTHON, "-m", "training.predict", "--run", str(synthetic_runs[0]), "--events",
                           str(tmp_path / "events.csv"), "--k", "3", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = pd.read_csv(out)
    assert list(written.columns) == [key, "rank", "item_id", "score"] and len(written) == 3 * events[key].nunique()
    assert f"predict: {events[key].nunique()}/{events[key].nunique()} sessions" in done.stderr
    for arguments, message in [(["--events", str(tmp_path / "none.csv")], "--events"), (["--k", "0"], "--k: expected >= 1, got 0"),
                               (["--out", str(tmp_path / "p.json")], "expected a .parquet or .csv file, got '.json'")]:
        command = ["--run", str(synthetic_runs[0]), "--events", str(tmp_path / "events.csv"), "--out", str(out), *arguments]
        bad = subprocess.run([PYTHON, "-m", "training.predict", *command], cwd=ROOT, capture_output=True, text=True)
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and message in bad.stderr, bad.stderr
