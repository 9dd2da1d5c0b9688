"""Raw events: the column mapping and the checks that name the bad column, the expected and the received."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.data.events import EventColumns, EventsError, check_continuous, read_event_file, to_unix_seconds, validate_events

COLUMNS = EventColumns(session="sid", item="item", time="ts", categorical=("cat",), continuous=("price",))


def events(**overrides):
    frame = pd.DataFrame(
        {"sid": [1, 1, 2], "item": ["a", "b", "a"], "ts": [10, 20, 30], "cat": ["x", "y", "x"], "price": [1.0, 2.0, 3.0]}
    )
    for column, values in overrides.items():
        frame[column] = values
    return frame


def test_mapping_rejects_unknown_and_missing_keys():
    with pytest.raises(EventsError, match=r"unknown key\(s\) \['itm'\]"):
        EventColumns.from_mapping({"itm": "item", "item": "item", "time": "ts"})
    with pytest.raises(EventsError, match=r"missing required key\(s\) \['time'\]"):
        EventColumns.from_mapping({"item": "item"})


def test_mapping_file_yaml(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("session: sid\nitem: item\ntime: ts\ncategorical: cat\ncontinuous: [price]\n")
    assert EventColumns.load(path) == COLUMNS


def test_missing_column_is_named_with_its_role():
    with pytest.raises(EventsError, match=r"'price' \(continuous\) not found"):
        validate_events(events().drop(columns="price"), COLUMNS, "events.csv")


def test_missing_ids_are_rejected():
    with pytest.raises(EventsError, match=r"column 'item' \(item id\) has 1 missing"):
        validate_events(events(item=["a", None, "b"]), COLUMNS, "events.csv")


def test_unparsable_timestamps_name_column_and_example():
    with pytest.raises(EventsError, match=r"column 'ts' \(time\): 1 unparsable timestamps, e.g. 'yesterday'"):
        validate_events(events(ts=["2024-01-01 10:00", "yesterday", "2024-01-02"]), COLUMNS, "events.csv")


def test_timestamps_become_unix_seconds():
    strings = pd.Series(["1970-01-01 00:00:10", "1970-01-02T00:00:00Z"])
    np.testing.assert_array_equal(to_unix_seconds(strings, "ts"), [10, 86_400])
    datetimes = pd.Series(pd.to_datetime(["1970-01-01 00:01:00"]))
    np.testing.assert_array_equal(to_unix_seconds(datetimes, "ts"), [60])
    assert validate_events(events(), COLUMNS, "x")["ts"].dtype == np.int64


def test_non_numeric_continuous_is_rejected():
    with pytest.raises(EventsError, match=r"continuous column 'price' must be numeric, got dtype object"):
        validate_events(events(price=["1", "2", "3"]), COLUMNS, "x")


def test_continuous_must_be_finite_and_non_negative_under_log():
    with pytest.raises(EventsError, match=r"'price': 1 infinite"):
        check_continuous(events(price=[1.0, np.inf, 2.0]), COLUMNS, log_transform=False)
    with pytest.raises(EventsError, match=r"'price': 1 negative values"):
        check_continuous(events(price=[1.0, -2.0, 2.0]), COLUMNS, log_transform=True)
    check_continuous(events(price=[1.0, -2.0, np.nan]), COLUMNS, log_transform=False)


def test_empty_and_unknown_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(EventsError, match="empty.csv is empty"):
        read_event_file(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("sid,item,ts\n")
    with pytest.raises(EventsError, match="header.csv has no events"):
        read_event_file(header_only)
    with pytest.raises(EventsError, match="expected .parquet, .csv or .tsv, got '.xlsx'"):
        (tmp_path / "e.xlsx").write_text("x")
        read_event_file(tmp_path / "e.xlsx")
