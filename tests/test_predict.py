"""python -m training.predict: offline top-k for one's own events, equal to training.recommend
(which the serving tests hold equal to the served ensemble), in chunks of sessions."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PYTHON, ROOT
from training.data.parquet import read_parquet


@pytest.fixture(scope="module")
def held_out_events(prepared_synthetic):
    from training.prepare import raw_events
    from training.data.views import held_out

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


@pytest.fixture(scope="module")
def causal_run(prepared_synthetic, tmp_path_factory):
    """GPT-2 reading 8 events of the 12 the transform keeps: one forward answers prefixes up to 8, prefix rows the rest;
    with the repeat score, which both paths must apply alike."""
    from tests.conftest import train_run

    return train_run(prepared_synthetic, tmp_path_factory.mktemp("runs") / "gpt2", "gpt2_clm.yaml", "model.d_model=16",
                     "model.n_layers=1", "model.n_heads=1", "model.max_length=8", "model.repeat_window=4")


@pytest.mark.parametrize("body, exclude_seen", [("causal", True), ("causal", False), ("bidirectional", True)])
def test_every_position_equals_predicting_each_prefix_alone(synthetic_runs, causal_run, held_out_events, body, exclude_seen,
                                                           monkeypatch):
    from training import recommend
    from training.predict import predict

    monkeypatch.setattr(recommend, "SCORE_VALUES", 1)  # one prefix scored at a time: many chunks, stitched back in order

    events, key = held_out_events
    lengths = events.groupby(key, sort=False).size()
    # past the 12 events kept, past the causal model's 8, and short, in one chunk of sessions
    chosen = [lengths[lengths > 12].index[0], lengths[(lengths > 8) & (lengths <= 12)].index[0], *lengths[lengths <= 4].index[:2]]
    events = pd.concat([events[events[key] == session].sort_values("timestamp", kind="stable") for session in chosen])
    run = causal_run if body == "causal" else synthetic_runs[0]
    every = predict(run, events, k=5, exclude_seen=exclude_seen, sessions_per_chunk=3, all_positions=True)
    prefixes = pd.concat([session.head(t).assign(**{key: f"{name}@{t}"})
                          for name, session in events.groupby(key, sort=False) for t in range(1, len(session) + 1)])
    alone = predict(run, prefixes, k=5, exclude_seen=exclude_seen, sessions_per_chunk=1)
    assert list(every.columns) == [key, "position", "rank", "item_id", "score"]
    assert len(every) == 5 * len(events) and every["position"].max() > 12
    answers = every[key].astype(str) + "@" + every["position"].astype(str)
    assert answers.tolist() == alone[key].tolist() and every["rank"].tolist() == alone["rank"].tolist()
    assert every["item_id"].tolist() == alone["item_id"].tolist()
    np.testing.assert_allclose(every["score"].to_numpy(), alone["score"].to_numpy(), atol=1e-5, rtol=0)


def test_the_command_reads_events_by_their_own_mapping(synthetic_runs, held_out_events, tmp_path, capsys):
    from training.predict import main, predict

    events, key = held_out_events
    events = events[events[key].isin(events[key].unique()[:6])]
    own = {"session_id": "visit", "user_id": "listener", "item_id": "song", "timestamp": "played_at",
           "category": "genre", "price": "cost", "device": "platform"}
    mine = events.rename(columns=own).assign(played_at=pd.to_datetime(events["timestamp"], unit="s").astype(str))
    mine.to_csv(tmp_path / "mine.csv", index=False)
    mapping = {"session": "visit", "user": "listener", "item": "song", "time": "played_at", "categorical": ["genre"],
               "continuous": ["cost"], "context_categorical": ["platform"]}
    (tmp_path / "mapping.json").write_text(json.dumps(mapping))
    out = tmp_path / "predictions.parquet"
    command = [PYTHON, "-m", "training.predict", "--run", str(synthetic_runs[0]), "--events", str(tmp_path / "mine.csv"),
               "--k", "4", "--all-positions", "--out", str(out)]
    done = subprocess.run([*command, "--mapping", str(tmp_path / "mapping.json")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = predict(synthetic_runs[0], events, k=4, all_positions=True).rename(columns={key: "visit"})
    pd.testing.assert_frame_equal(read_parquet(out), expected, check_exact=False, atol=1e-6)
    (tmp_path / "no_genre.json").write_text(json.dumps({**mapping, "categorical": []}))
    (tmp_path / "elsewhere.json").write_text(json.dumps({**mapping, "item": "track"}))
    for mapping_file, message in [("no_genre.json", "expected a column for the run's categorical column 'category'"),
                                  ("elsewhere.json", f"--events {tmp_path / 'mine.csv'}: mapped column(s) 'track' (item) not found"),
                                  ("none.json", "none.json does not exist")]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as refused:  # in this process: a command start costs seconds
            main([*command[3:], "--mapping", str(tmp_path / mapping_file)])
        said = capsys.readouterr().err
        assert refused.value.code == 2 and len(said.splitlines()) == 1 and message in said, said
