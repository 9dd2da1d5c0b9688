"""MovieLens from the registry packages, through the standard protocol (items with >= 5
ratings, per-user chronological sequences, leave-one-out)."""
from __future__ import annotations

import numpy as np
import nvtabular as nvt
import pytest

from training.data import prepared, views
from training.data.datasets import movielens


@pytest.fixture(scope="module")
def ml1m(prepared_ml1m):
    return prepared_ml1m


def test_ml1m_leave_one_out_view_has_the_published_counts(ml1m):
    summary = prepared.load_summary(ml1m)
    assert summary["counts"]["users"] == summary["counts"]["sequences"] == 6_040
    assert summary["counts"]["items"] == 3_416
    assert summary["counts"]["events"] == 999_611
    assert summary["counts"]["per_split"] == {"train": 6_040, "valid": 6_040, "test": 6_040}
    assert summary["item_cardinality"] == 3_416 + 3  # every item occurs in training; 3 reserved codes


def test_ml1m_valid_is_test_without_its_last_item(ml1m):
    test = prepared.read_split(ml1m, "test").set_index("user_id")
    valid = prepared.read_split(ml1m, "valid").set_index("user_id")
    train = prepared.read_split(ml1m, "train").set_index("user_id")
    for user in test.index[:500]:
        test_items, valid_items, train_items = (list(frame.at[user, "item_id_list"]) for frame in (test, valid, train))
        assert len(test_items) <= 200
        assert valid_items[-(len(test_items) - 1):] == test_items[:-1]
        assert train_items[-(len(valid_items) - 1):] == valid_items[:-1]
        assert len(list(test.at[user, "genres_list"])) == len(test_items)


def test_item_codes_map_back_to_original_ids(ml1m):
    vocabulary = prepared.item_vocabulary(ml1m)
    assert vocabulary.index.min() == 3 and len(vocabulary) == 3_416 and vocabulary.is_unique
    events = views.sort_events(views.filter_items(movielens.load_events("ml-1m"), movielens.COLUMNS, 5), "user_id", "timestamp")
    first_user = events[events["user_id"] == "1m_1"]["item_id"].tolist()
    codes = prepared.read_split(ml1m, "test").set_index("user_id").at["1m_1", "item_id_list"]
    assert vocabulary.loc[list(codes)].tolist() == first_user[-200:]


def test_ml1m_workflow_reloads_and_retransforms_identically(ml1m):
    events = views.filter_items(movielens.load_events("ml-1m"), movielens.COLUMNS, 5)
    got = nvt.Workflow.load(str(ml1m / prepared.WORKFLOW_DIR)).transform(events)
    want = prepared.read_split(ml1m, "test")
    assert list(got.columns) == list(want.columns)
    for column in want.columns:
        if want[column].dtype == object:
            assert all(np.array_equal(a, b) for a, b in zip(got[column], want[column])), column
        else:
            np.testing.assert_array_equal(got[column].to_numpy(), want[column].to_numpy(), err_msg=column)


def test_ml100k_loads_with_side_information():
    events = movielens.load_events("ml-100k")
    assert len(events) == 100_000
    assert events["user_id"].nunique() == 943 and events["item_id"].nunique() == 1_682
    assert not events[["genres", "year", "age", "gender", "occupation"]].isna().any().any()


def test_ml1m_raw_counts_and_side_information():
    events = movielens.load_events("ml-1m")
    assert len(events) == 1_000_209 and events["user_id"].nunique() == 6_040 and events["item_id"].nunique() == 3_706
    assert events["timestamp"].is_monotonic_increasing is False  # file order is not time order: we sort stably
    assert not events[["genres", "year", "age", "gender", "occupation"]].isna().any().any()
