"""What `training.prepare` writes: time-ordered, truncated, categorified sequences with a Merlin
schema, and a saved workflow that re-transforms raw events to identical output."""
from __future__ import annotations

import merlin.io
import numpy as np
import nvtabular as nvt
import pandas as pd
from merlin.schema import Tags

from training.data import prepared, views
from training.data.events import EventColumns
from training.data.workflow import SPECIAL_CODES, WorkflowOptions, build_workflow, fit_workflow

COLUMNS = EventColumns(session="sid", item="item", time="ts", categorical=("cat",), continuous=("price",), context_categorical=("device",))


def _fit(train, tmp_path, **options):
    workflow = build_workflow(COLUMNS, WorkflowOptions(sequence_key="sid", **options), tmp_path / "categories")
    return fit_workflow(workflow, train)


def test_sequences_are_time_ordered_truncated_and_share_codes(tmp_path):
    train = pd.DataFrame(
        {"sid": [1, 1, 1, 1, 2, 2], "item": ["c", "a", "d", "b", "a", "e"], "ts": [30, 10, 40, 20, 5, 6],
         "cat": ["x", "x", "y", "y", "x", "z"], "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "device": ["m"] * 4 + ["d"] * 2}
    )
    workflow = _fit(train, tmp_path, max_length=3)
    one_per_row = workflow.transform(train.assign(sid=range(len(train))))  # each event alone: its code
    code = dict(zip(train["item"], (items[0] for items in one_per_row["item_list"])))
    assert len(set(code.values())) == 5 and min(code.values()) >= SPECIAL_CODES["first_value"]
    out = workflow.transform(train)
    assert out["sid"].tolist() == [1, 2]
    assert list(out["item_list"][0]) == [code["b"], code["c"], code["d"]]  # a, b, c, d in time; last 3 kept
    assert list(out["item_list"][1]) == [code["a"], code["e"]]
    assert out["ts_first"].tolist() == [10, 5]
    prices = np.log1p([4.0, 1.0, 3.0])  # b, c, d
    mean, std = np.log1p(train["price"]).mean(), np.log1p(train["price"]).std()
    np.testing.assert_allclose(out["price_list"][0], (prices - mean) / std, rtol=1e-5)


def test_unknown_items_map_to_oov_and_missing_to_null(tmp_path):
    train = pd.DataFrame({"sid": [1, 1, 2], "item": ["a", "b", "a"], "ts": [1, 2, 3], "cat": ["x", "y", "x"],
                          "price": [1.0, 2.0, 3.0], "device": ["m", "m", "d"]})
    workflow = _fit(train, tmp_path, max_length=5)
    later = pd.DataFrame({"sid": [9, 9, 9], "item": ["a", "never-seen", None], "ts": [1, 2, 3], "cat": ["x", "x", "x"],
                          "price": [1.0, np.nan, 2.0], "device": ["m", "m", "m"]})
    items = list(workflow.transform(later)["item_list"][0])
    assert items[0] >= SPECIAL_CODES["first_value"] and items[1] == SPECIAL_CODES["oov"] and items[2] == SPECIAL_CODES["null"]
    assert SPECIAL_CODES == {"pad": 0, "null": 1, "oov": 2, "first_value": 3}
    assert np.isfinite(np.asarray(workflow.transform(later)["price_list"][0])).all()  # missing -> training median


def test_rare_items_map_to_oov_with_min_frequency(tmp_path):
    train = pd.DataFrame({"sid": [1, 1, 1, 2], "item": ["a", "a", "b", "a"], "ts": [1, 2, 3, 4], "cat": ["x"] * 4,
                          "price": [1.0] * 4, "device": ["m"] * 4})
    items = list(_fit(train, tmp_path, max_length=5, min_item_frequency=2).transform(train)["item_list"][0])
    assert items[0] == items[1] >= 3 and items[2] == SPECIAL_CODES["oov"]


def test_synthetic_prepared_folder(prepared_synthetic):
    summary = prepared.load_summary(prepared_synthetic)
    assert summary["view"] == "session" and summary["split"] == "time"
    windows = summary["windows"]
    assert max(windows["train"]) < windows["valid"][0] < windows["test"][0]
    dataset = merlin.io.Dataset(str(prepared_synthetic / "train"), engine="parquet")
    schema = dataset.schema
    item = schema.select_by_tag(Tags.ITEM_ID).first
    assert item.name == summary["item_list_column"] == "item_id_list" and item.is_list
    assert item.properties["domain"]["max"] + 1 == summary["item_cardinality"]
    assert item.properties["cat_path"] == "workflow/categories/unique.item_id.parquet"
    assert (prepared_synthetic / item.properties["cat_path"]).is_file()
    assert set(schema.select_by_tag(Tags.CONTINUOUS).column_names) == {"price_list"}
    assert set(schema.select_by_tag(Tags.LIST).column_names) == {"item_id_list", "category_list", "price_list"}
    assert set(schema.select_by_tag(Tags.CONTEXT).column_names) == {"user_id_first", "device_first"}
    train = prepared.read_split(prepared_synthetic, "train")
    lengths = train["item_id_list"].map(len)
    assert lengths.max() <= summary["max_length"] == 12 and lengths.min() >= 1
    assert min(min(items) for items in train["item_id_list"]) >= 3  # fit on train: no OOV, no pad
    assert len(list((prepared_synthetic / "windows").iterdir())) == len(sum(windows.values(), []))


def test_saved_workflow_retransforms_raw_events_identically(prepared_synthetic):
    from training.prepare import raw_events

    summary = prepared.load_summary(prepared_synthetic)
    events = raw_events(prepared_synthetic)[0]  # generated again, rare training items' events dropped
    windows = views.window_index(views.sort_events(events, "session_id", "timestamp"), "session_id", "timestamp", 1.0, per_event=False)
    test_events = views.sort_events(events, "session_id", "timestamp")[windows == summary["windows"]["test"][0]]
    reloaded = nvt.Workflow.load(str(prepared_synthetic / prepared.WORKFLOW_DIR))
    got = reloaded.transform(test_events)
    want = prepared.read_split(prepared_synthetic, "test")
    assert list(got.columns) == list(want.columns)
    for column in want.columns:
        assert [np.asarray(v).tolist() for v in got[column]] == [np.asarray(v).tolist() for v in want[column]], column
