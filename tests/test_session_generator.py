"""The calibrated session generator at a tenth (a twentieth) of the real size: its statistics, its splits, and
baselines that are strong (sequential rules far above popularity, session kNN above both) but far
from solving it."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from training.data.datasets.sessions import FIRST_ITEM_ID, REAL, SPLITS, SessionConfig, generate_sessions, item_genres, main, statistics

SMALL = {"n_items": 21_000, "n_train_sessions": 4_900, "n_valid_sessions": 750, "n_test_sessions": 750}
TINY = ["--items", "10500", "--train-sessions", "2450", "--valid-sessions", "375", "--test-sessions", "375"]  # a twentieth


@pytest.fixture(scope="module")
def small():
    return generate_sessions(replace(SessionConfig(), **SMALL))


def test_statistics_match_the_real_dataset(small):
    train, valid, test = small
    stats = statistics(train, test)
    assert (stats["length_q1"], stats["length_median"]) == (REAL["length_q1"], REAL["length_median"])
    assert 10 <= stats["length_q3"] <= 12 and 40 <= stats["length_p99"] <= 65
    assert abs(stats["test_repeats_previous"] - REAL["test_repeats_previous"]) < 0.015
    assert abs(stats["test_repeats_earlier"] - REAL["test_repeats_earlier"]) < 0.025
    assert abs(stats["items_once"] - REAL["items_once"]) < 0.07
    assert abs(stats["items_under_5"] - REAL["items_under_5"]) < 0.06
    assert stats["train_sessions"] == SMALL["n_train_sessions"] and stats["test_sessions"] == SMALL["n_test_sessions"]
    assert valid["session_id"].nunique() == SMALL["n_valid_sessions"]


def test_same_seed_same_sessions_other_seed_other_sessions(small):
    again = generate_sessions(replace(SessionConfig(), **SMALL))
    for mine, other in zip(small, again):
        pd.testing.assert_frame_equal(mine, other)
    assert not small[0].equals(generate_sessions(replace(SessionConfig(), **SMALL, seed=1))[0])


def test_held_out_items_occur_in_training_and_splits_follow_in_time(small):
    train, valid, test = small
    assert np.isin(valid["item_id"], train["item_id"]).all() and np.isin(test["item_id"], train["item_id"]).all()
    starts = [events.groupby("session_id")["timestamp"].min() for events in small]
    assert starts[0].max() <= starts[1].min() and starts[1].max() <= starts[2].min()
    assert len(set(starts[0].index) | set(starts[1].index) | set(starts[2].index)) == sum(len(s) for s in starts)
    for events in small:
        assert events.groupby("session_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
        assert events.groupby("session_id").size().min() >= 2


def _same_genre_share(events: pd.DataFrame, genre: np.ndarray) -> float:
    """Share of consecutive events of a session whose items share a genre."""
    items, sessions = events["item_id"].to_numpy() - FIRST_ITEM_ID, events["session_id"].to_numpy()
    follows = sessions[1:] == sessions[:-1]
    return float(np.mean(genre[items[1:]][follows] == genre[items[:-1]][follows]))


def test_sessions_keep_to_a_genre_and_without_genres_they_do_not(small):
    genre = item_genres(replace(SessionConfig(), **SMALL))
    assert len(genre) == SMALL["n_items"] and len(np.unique(genre)) == round(SMALL["n_items"] / SessionConfig().genre_items)
    unrelated = generate_sessions(replace(SessionConfig(), **SMALL, genre_items=0))[0]
    assert item_genres(replace(SessionConfig(), **SMALL, genre_items=0)) is None
    chance = float(np.sum(np.bincount(genre) ** 2) / len(genre) ** 2)
    assert _same_genre_share(small[0], genre) > 0.8  # playlists and random picks keep to the playing genre
    assert abs(_same_genre_share(unrelated, genre) - chance) < 0.05  # the same genres mean nothing there


def test_bad_settings_are_refused_in_one_line(tmp_path, capsys):
    for argv, message in (
        (["--set", "genre_items"], "sessions: --set genre_items: expected FIELD=VALUE with FIELD one of"),
        (["--set", "n_items=5"], "sessions: --set n_items=5: expected FIELD=VALUE with FIELD one of"),
        (["--set", "skip=a"], "sessions: --set skip=a: expected a number, got 'a'"),
        (["--set", "random_pick=0.99"], "sessions: SessionConfig: expected repeat_previous + repeat_earlier + random_pick + drift <= 1"),
    ):
        with pytest.raises(SystemExit) as refused:
            main(["--out", str(tmp_path / "raw"), *argv])
        said = capsys.readouterr().err
        assert refused.value.code == 2 and said.startswith(message) and said.count("\n") == 1, said
    assert not (tmp_path / "raw").exists()


def test_bad_sizes_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(tmp_path / "raw"), "--items", "0"])
    assert refused.value.code == 2 and capsys.readouterr().err == "sessions: --items: expected a positive integer, got 0\n"
    assert not (tmp_path / "raw").exists()


def test_baselines_are_strong_but_far_from_solving_it(tmp_path):
    """Through the command's files, training.prepare's own splits and training.baselines, every position."""
    from training.baselines import baseline_metrics
    from training.batches import SequenceData
    from training.model.features import feature_spec
    from training.prepare import PrepareArgs, run

    raw = tmp_path / "raw"
    main(["--out", str(raw), *TINY])
    assert sorted(path.name for path in raw.iterdir()) == sorted([*(f"{name}.parquet" for name in SPLITS), "mapping.yaml"])
    run(PrepareArgs(dataset=str(raw / "train.parquet"), valid_events=raw / "valid.parquet", test_events=raw / "test.parquet",
                    mapping=raw / "mapping.yaml", out=tmp_path / "prepared"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        spec = feature_spec(tmp_path / "prepared")
    train, test = SequenceData(tmp_path / "prepared", "train", spec), SequenceData(tmp_path / "prepared", "test", spec)
    hr = {name: metrics["hr@20"] for name, metrics in baseline_metrics(
        train, test, (20,), protocol="all", names=("most_popular", "sequential_rules", "session_knn")).items()}
    assert max(hr.values()) < 0.5  # random picks, skips and drift: far from solved
    assert hr["sequential_rules"] > 2.5 * hr["most_popular"]
    assert hr["session_knn"] > 1.1 * hr["sequential_rules"]  # the session's earlier items tell which playlist plays
