"""Sequence views and splits on hand-made events whose answers are known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.data import views
from training.data.events import EventColumns, EventsError

COLUMNS = EventColumns(user="user", item="item", time="ts")


def test_filter_items_keeps_items_with_enough_interactions():
    events = pd.DataFrame({"user": [1, 1, 2, 2, 3], "item": [7, 8, 7, 9, 7], "ts": [1, 2, 3, 4, 5]})
    kept = views.filter_items(events, COLUMNS, min_count=2)
    assert kept["item"].tolist() == [7, 7, 7]


def test_leave_one_out_holds_out_the_last_two_events_in_time_order():
    events = pd.DataFrame(
        {"user": [1, 1, 1, 1, 2, 2, 2, 3, 3], "item": [13, 11, 14, 12, 21, 22, 23, 31, 32], "ts": [3, 1, 4, 2, 1, 2, 3, 1, 2]}
    )
    splits = views.leave_one_out(events, "user", "ts")
    by_user = {name: frame.groupby("user")["item"].apply(list).to_dict() for name, frame in splits.items()}
    assert by_user["test"] == {1: [11, 12, 13, 14], 2: [21, 22, 23]}  # user 3 has < 3 events
    assert by_user["valid"] == {1: [11, 12, 13], 2: [21, 22]}
    assert by_user["train"] == {1: [11, 12], 2: [21]}


def test_ties_in_time_keep_file_order():
    events = pd.DataFrame({"user": [1, 1, 1], "item": [5, 3, 4], "ts": [7, 7, 7]})
    assert views.sort_events(events, "user", "ts")["item"].tolist() == [5, 3, 4]


def test_sessions_are_cut_by_inactivity_gap_per_user():
    events = pd.DataFrame({"user": [1, 1, 1, 2, 1], "item": [1, 2, 3, 4, 5], "ts": [0, 100, 5000, 120, 5100]})
    cut = views.cut_sessions(events, COLUMNS, gap_s=1800)
    sessions = cut.groupby(views.DERIVED_SESSION)["item"].apply(list).tolist()
    assert sessions == [[1, 2], [3, 5], [4]]


def test_time_windows_and_split():
    events = pd.DataFrame({"user": [1, 1, 2, 3, 4], "item": [1, 2, 3, 4, 5], "ts": [0, 90_000, 3_600, 200_000, 90_000]})
    per_event = views.window_index(events, "user", "ts", 1.0, per_event=True)
    assert per_event.tolist() == [0, 1, 0, 2, 1]
    per_sequence = views.window_index(events, "user", "ts", 1.0, per_event=False)
    assert per_sequence.tolist() == [0, 0, 0, 2, 1]  # user 1's sequence starts in window 0
    assert views.time_split(per_event) == {"train": [0], "valid": [1], "test": [2]}
    with pytest.raises(EventsError, match="at least 3 windows with events, got 2"):
        views.time_split(np.array([0, 0, 5]))


def test_session_history_is_the_users_events_before_the_session_last_n_items():
    events = pd.DataFrame({"user": ["a", "a", "a", "b", "a", "a", "b", "b", "a"], "session": [2, 2, 1, 3, 1, 1, 5, 5, 4],
                           "item": [5, 6, 1, 7, 2, 3, 8, 9, 4], "ts": [20, 21, 10, 5, 11, 12, 6, 7, 30]})
    history = views.session_history(events, "user", "session", "ts", "item", n=4)
    assert {key: list(items) for key, items in history.items()} == {
        2: [1, 2, 3], 1: [], 3: [], 5: [7], 4: [2, 3, 5, 6]}  # the last 4 before each session's first event


def test_session_history_never_holds_the_session_or_later_events():
    events = pd.DataFrame({"user": [1, 1, 1, 1], "session": [1, 2, 1, 2], "item": [10, 20, 11, 21], "ts": [0, 5, 6, 9]})
    history = views.session_history(events, "user", "session", "ts", "item", n=10)  # session 1 overlaps session 2
    assert list(history[1]) == [] and list(history[2]) == [10]  # only events before its first one


def test_long_sequences_are_cut_from_their_end_into_windows_sharing_one_event():
    events = pd.DataFrame({"k": ["a"] * 10 + ["b"] * 3 + ["c"] * 11, "t": [*range(10), 5, 5, 6, *range(11)]})
    events["event"] = np.arange(len(events))
    windows, original = views.split_long_sequences(events.iloc[[*range(13, 24), *range(13)]], "k", "t", max_length=4)
    rows = [(original[key], group["event"].tolist()) for key, group in windows.groupby("k", sort=False)]
    assert rows == [("a", [0, 1, 2, 3]), ("a", [3, 4, 5, 6]), ("a", [6, 7, 8, 9]),  # every event after the first a target once
                    ("b", [10, 11, 12]),  # short enough: whole, ties in time in file order
                    ("c", [13, 14]), ("c", [14, 15, 16, 17]), ("c", [17, 18, 19, 20]), ("c", [20, 21, 22, 23])]
    assert windows["k"].dtype == events["k"].dtype and windows["k"].nunique() == 8
    numbered, _ = views.split_long_sequences(events.assign(k=events["k"].map({"a": 7, "b": 8, "c": 9}).astype("int32")), "k", "t", 4)
    assert numbered["k"].dtype == np.int32


def test_min_item_count_within_the_training_events_keeps_the_others():
    columns = EventColumns(session="s", item="i", time="t")
    events = pd.DataFrame({"s": [1, 1, 2, 2, 3, 3], "i": ["x", "y", "x", "z", "y", "y"], "t": range(6)})
    training = np.array([True, True, True, True, False, False])
    kept = views.filter_items(events, columns, 2, within=training)
    assert kept["i"].tolist() == ["x", "x", "y", "y"]  # y is rare in training (1): dropped there, kept held out
    assert views.filter_items(events, columns, 2)["i"].tolist() == ["x", "y", "x", "y", "y"]  # counted over all: y kept


def test_leave_one_session_out_tests_each_users_last_session():
    events = pd.DataFrame({"user": [1] * 6 + [2] * 4 + [3] * 2, "session": [10, 10, 11, 12, 12, 13, 20, 21, 22, 22, 30, 31],
                           "item": range(12), "ts": [1, 2, 5, 9, 10, 20, 3, 4, 8, 7, 1, 2]})
    splits = views.leave_one_session_out(events, "user", "session", "ts")
    sessions = {name: sorted(set(frame["session"])) for name, frame in splits.items()}
    assert sessions == {"train": [10, 11, 20, 30, 31], "valid": [12, 21], "test": [13, 22]}  # user 3: 2 sessions, trains
    assert splits["test"]["item"].tolist() == [5, 9, 8]  # in time order within the session
