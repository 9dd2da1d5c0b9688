"""Time features derived from event times (`model_repository/transform/compiled.time_features`,
the one definition prepare and the served transform use): values by hand, only earlier events of
the sequence enter them, and the compiled request-time transform equals the prepared workflow on
held-out sessions (events shuffled and padded, sessions crossing midnight, first events); the
item features (age, recent) come from training's events only, unknown items 0."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model_repository.transform.compiled import RECENT_DAYS, ItemTimes, RequestTransform, fit_item_times, time_features
from training import prepare
from training.data import prepared
from training.data.events import EventsError

MONDAY = 1_699_833_600  # 2023-11-13 00:00 UTC, a Monday
ALL = ("gap", "elapsed", "hour", "weekday", "age", "recent")


def test_time_features_by_hand():
    times = np.array([MONDAY, MONDAY + 60, MONDAY + 3_600, MONDAY + 6 * 3_600])
    first = np.array([True, False, False, True])
    values = time_features(ALL, times, first)
    np.testing.assert_allclose(values["time_gap_log"], np.log1p([0, 60, 3_540, 0]))
    np.testing.assert_allclose(values["time_elapsed_log"], np.log1p([0, 60, 3_600, 0]))
    np.testing.assert_allclose(values["hour_sin"][[0, 3]], [0, 1], atol=1e-12)  # midnight, 6 am
    np.testing.assert_allclose(values["hour_cos"][[0, 3]], [1, 0], atol=1e-12)
    np.testing.assert_allclose(values["weekday_sin"][0], 0, atol=1e-12)  # Monday 0:00: angle 0
    tokyo = time_features(("hour", "weekday"), np.array([MONDAY - 9 * 3_600]), np.array([True]), "Asia/Tokyo")
    np.testing.assert_allclose([tokyo["hour_cos"][0], tokyo["weekday_cos"][0]], [1, 1])  # Monday 0:00 in Tokyo
    late, early = time_features(("hour",), np.array([MONDAY - 60, MONDAY + 60]), np.array([True, False]))["hour_sin"]
    assert abs(late - early) < 0.02  # across midnight the clock stays close
    assert set(time_features(("gap",), times, first)) == {"time_gap_log"}


@pytest.mark.parametrize("text", [False, True])
def test_item_features_by_hand(text):
    day = 86_400
    items = pd.Series(["a", "b", "a", "c", "a"] if text else [10, 20, 10, 30, 10])
    times = np.array([MONDAY, MONDAY + day, MONDAY + 2 * day, MONDAY + 20 * day, MONDAY + 21 * day])
    table = ItemTimes(None, fit_item_times(items, times))
    ask = np.array([b"a", b"b", b"zzz", b"a"], dtype=object) if text else np.array([10, 20, 99, 10])
    at = np.array([MONDAY + 3_600, MONDAY + 30 * day, MONDAY + 30 * day, MONDAY - day])
    values = table.features(("age", "recent"), ask, at)
    np.testing.assert_allclose(values["item_age_log"], np.log1p([3_600, 29 * day, 0, 0]))  # unknown: 0; before its first: 0
    # training's last RECENT_DAYS days (after day 14): "a" once (day 21), "b" never
    assert RECENT_DAYS == 7
    np.testing.assert_allclose(values["item_recent_log"], np.log1p([1, 0, 0, 1]))


def test_an_events_value_depends_only_on_earlier_events():
    times = np.array([MONDAY, MONDAY + 30, MONDAY + 90, MONDAY + 500])
    first = np.array([True, False, False, False])
    whole = time_features(ALL, times, first)
    prefix = time_features(ALL, times[:2], first[:2])
    for column, values in prefix.items():
        np.testing.assert_array_equal(values, whole[column][:2])


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    from training.data.datasets import synthetic

    folder = tmp_path_factory.mktemp("timed")
    events = synthetic.generate_events(synthetic.SyntheticConfig(n_events=20_000, seed=4))
    events.to_parquet(folder / "events.parquet", index=False)
    (folder / "mapping.yaml").write_text(synthetic.mapping_yaml())
    out = folder / "prepared"
    prepare.run(prepare.PrepareArgs(dataset=str(folder / "events.parquet"), mapping=folder / "mapping.yaml", out=out,
                                    time_features=ALL, timezone="America/New_York", max_length=6))
    return out, events


def test_the_compiled_transform_equals_the_workflow_on_time_features(timed):
    out, events = timed
    test = pd.concat([prepared.read_split(out, "test"), prepared.read_split(out, "train").head(1_500)]).set_index("session_id")
    transform = RequestTransform(out)
    assert "time_gap_log" not in transform.inputs and "timestamp" in transform.inputs  # derived, never sent
    held_out = events[events["session_id"].isin(test.index)]
    groups = [group for _, group in held_out.groupby("session_id", sort=False)]
    width = max(len(group) for group in groups) + 2
    rng = np.random.default_rng(0)
    columns = {name: np.zeros((len(groups), width), dtype=object if dtype == "string" else dtype)
               for name, dtype in transform.inputs.items()}
    for row, group in enumerate(groups):
        group = group.iloc[rng.permutation(len(group))]  # any order: the transform sorts by time
        for name, dtype in transform.inputs.items():
            raw = group[name].to_numpy()
            columns[name][row, : len(raw)] = [str(v).encode() for v in raw] if dtype == "string" else raw
    served = transform.transform(columns, np.array([len(g) for g in groups]))
    local = pd.to_datetime(held_out["timestamp"], unit="s", utc=True).dt.tz_convert("America/New_York")
    days = held_out.assign(day=local.dt.date).groupby("session_id")["day"].nunique()
    assert (days > 1).sum() >= 3 and len(groups) >= 1_000  # sessions across local midnight among them
    for column in ("time_gap_log_list", "time_elapsed_log_list", "hour_sin_list", "hour_cos_list", "weekday_sin_list",
                   "weekday_cos_list", "item_age_log_list", "item_recent_log_list"):
        for row, group in enumerate(groups):
            want = np.asarray(test.at[group["session_id"].iloc[0], column])
            np.testing.assert_allclose(served[column][row][: len(want)], want, rtol=1e-5, atol=1e-6, err_msg=column)
            assert not served[column][row][len(want):].any()


def test_item_statistics_are_fitted_on_training_events_only(timed):
    out, _ = timed
    events, columns, key = prepare.raw_events(out)
    assert prepared.load_summary(out)["split"] == "time"  # sessions of the training windows train
    train = events[events[key].isin(prepared.read_split(out, "train")[key])]
    stored = pd.read_parquet(out / prepared.WORKFLOW_DIR / "item_times.parquet")
    pd.testing.assert_frame_equal(stored, fit_item_times(train[columns.item], train[columns.time].to_numpy()))
    assert len(stored) < events[columns.item].nunique()  # some items are seen in held-out events only


def test_time_features_are_model_inputs(timed):
    from training.model.features import feature_spec

    spec = feature_spec(timed[0])
    assert {"time_gap_log_list", "hour_sin_list", "weekday_cos_list"} <= set(spec.continuous)


@pytest.mark.parametrize("options,message", [
    (dict(time_features=("season",)), "--time-features: expected some of"),
    (dict(time_features=("hour",), timezone="Mars/Olympus"), "--timezone"),
])
def test_bad_time_feature_options_are_refused(tmp_path, options, message):
    with pytest.raises(EventsError, match=message):
        prepare.run(prepare.PrepareArgs(dataset="synthetic", synthetic_events=3_000, out=tmp_path / "p", **options))
    assert not (tmp_path / "p").exists()
