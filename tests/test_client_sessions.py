"""client.sessions builds the ensemble's requests from raw events, as the contract in
model_repository/README.md says: no server needed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from client.sessions import RequestSpec, session_batches

DATATYPES = {"item_id": "BYTES", "timestamp": "INT64", "price": "FP64", "device": "BYTES",
             "event_count": "INT32", "k": "INT32"}


def make_spec(**changes) -> RequestSpec:
    fields = dict(datatypes=DATATYPES, max_batch_size=8, sequence_key="session_id", time_column="timestamp",
                  item_column="item_id", context_columns=("device",), max_events=10, max_k=5,
                  exclude_seen=True, max_request_events=1000)
    return RequestSpec(**{**fields, **changes})


def make_events(rows: list[tuple]) -> pd.DataFrame:
    """rows: (session_id, item_id, timestamp, price, device)."""
    return pd.DataFrame(rows, columns=["session_id", "item_id", "timestamp", "price", "device"])


def test_events_sorted_by_time_with_ties_in_input_order():
    events = make_events([("s", "late", 9, 1.0, "d"), ("s", "tie1", 5, 1.0, "d"), ("s", "first", 1, 1.0, "d"),
                          ("s", "tie2", 5, 1.0, "d"), ("s", "tie3", 5, 1.0, "d")])
    (batch,) = session_batches(events, make_spec(), k=3)
    assert batch.inputs["item_id"][0].tolist() == [b"first", b"tie1", b"tie2", b"tie3", b"late"]
    assert batch.inputs["timestamp"][0].tolist() == [1, 5, 5, 5, 9]


def test_only_the_last_max_events_are_kept():
    events = make_events([("s", f"i{t}", t, float(t), "d") for t in (4, 0, 3, 1, 2)])
    (batch,) = session_batches(events, make_spec(max_events=3), k=1)
    assert batch.inputs["item_id"].tolist() == [[b"i2", b"i3", b"i4"]]
    assert batch.inputs["price"].tolist() == [[2.0, 3.0, 4.0]]
    assert batch.inputs["event_count"].tolist() == [[3]]


def test_context_comes_from_the_earliest_event_even_when_truncated_away():
    events = make_events([("s", "c", 3, 1.0, "tablet"), ("s", "a", 1, 1.0, "phone"), ("s", "b", 2, 1.0, "desktop")])
    (batch,) = session_batches(events, make_spec(max_events=2), k=1)
    assert batch.inputs["item_id"].tolist() == [[b"b", b"c"]]
    assert batch.inputs["device"].tolist() == [[b"phone", b"phone"]]


def test_non_context_columns_keep_their_per_event_values():
    events = make_events([("s", "a", 1, 1.5, "phone"), ("s", "b", 2, 2.5, "tablet")])
    (batch,) = session_batches(events, make_spec(context_columns=()), k=1)
    assert batch.inputs["device"].tolist() == [[b"phone", b"tablet"]]
    assert batch.inputs["price"].tolist() == [[1.5, 2.5]]


def test_sessions_keep_first_appearance_order_in_batches_of_max_batch_size():
    events = make_events([("z", "z1", 5, 1.0, "d"), ("b", "b1", 1, 1.0, "d"), ("z", "z2", 6, 1.0, "d"),
                          ("m", "m1", 0, 1.0, "d"), ("a", "a1", 2, 1.0, "d"), ("b", "b2", 3, 1.0, "d"),
                          ("q", "q1", 4, 1.0, "d")])
    batches = session_batches(events, make_spec(max_batch_size=2), k=1)
    assert [batch.session_ids for batch in batches] == [["z", "b"], ["m", "a"], ["q"]]
    assert batches[0].inputs["item_id"].tolist() == [[b"z1", b"z2"], [b"b1", b"b2"]]
    assert [batch.inputs["k"].shape for batch in batches] == [(2, 1), (2, 1), (1, 1)]


def test_rows_are_right_padded_to_the_longest_session_of_their_batch():
    events = make_events([("long", "a", 1, 1.0, "d"), ("long", "b", 2, 2.0, "d"), ("long", "c", 3, 3.0, "d"),
                          ("short", "x", 7, 7.0, "e"), ("alone", "y", 8, 8.0, "f")])
    first, second = session_batches(events, make_spec(max_batch_size=2), k=4)
    assert first.inputs["item_id"].tolist() == [[b"a", b"b", b"c"], [b"x", b"", b""]]
    assert first.inputs["timestamp"].tolist() == [[1, 2, 3], [7, 0, 0]]
    assert first.inputs["price"].tolist() == [[1.0, 2.0, 3.0], [7.0, 0.0, 0.0]]
    assert first.inputs["device"].tolist() == [[b"d", b"d", b"d"], [b"e", b"", b""]]
    assert first.inputs["event_count"].tolist() == [[3], [1]]
    assert first.inputs["k"].tolist() == [[4], [4]]
    assert second.inputs["item_id"].shape == (1, 1)


def test_dtypes_follow_the_model_metadata():
    events = make_events([("s", 17, 1, 3, 2)])  # numbers in text columns, an int in a float column
    (batch,) = session_batches(events, make_spec(), k=1)
    dtypes = {name: values.dtype for name, values in batch.inputs.items()}
    assert dtypes == {"item_id": np.object_, "timestamp": np.int64, "price": np.float64, "device": np.object_,
                      "event_count": np.int32, "k": np.int32}
    assert batch.inputs["item_id"].tolist() == [[b"17"]]
    assert all(isinstance(value, bytes) for value in batch.inputs["device"].ravel())


def test_a_dict_of_arrays_is_accepted():
    events = {"session_id": np.array([1, 1]), "item_id": np.array(["a", "b"]), "timestamp": np.array([2, 1]),
              "price": np.array([1.0, np.nan]), "device": np.array(["d", "e"])}
    (batch,) = session_batches(events, make_spec(), k=1)
    assert batch.session_ids == [1]
    assert batch.inputs["item_id"].tolist() == [[b"b", b"a"]]
    assert np.isnan(batch.inputs["price"][0, 0])  # missing continuous values go as NaN: the server fills them


def test_datetimes_go_as_unix_seconds_and_whole_float_ids_lose_their_point():
    events = make_events([("s", 5.0, pd.Timestamp("1970-01-01 00:01:40"), 1.0, "d")])
    (batch,) = session_batches(events, make_spec(), k=1)
    assert batch.inputs["timestamp"].tolist() == [[100]]
    assert batch.inputs["item_id"].tolist() == [[b"5"]]


def test_missing_columns_are_named_with_what_the_model_needs_and_the_events_have():
    events = make_events([("s", "a", 1, 1.0, "d")]).drop(columns=["price"])
    with pytest.raises(ValueError, match=r"lack columns \['price'\].*needs \[.*'price'.*\].*have \['session_id'"):
        session_batches(events, make_spec(), k=1)


@pytest.mark.parametrize("k", [0, 6, 2.0])
def test_k_outside_one_to_max_k_is_refused(k):
    with pytest.raises(ValueError, match=rf"k: expected an integer in 1\.\.5 \(max_k\), got {k!r}"):
        session_batches(make_events([("s", "a", 1, 1.0, "d")]), make_spec(max_k=5), k=k)


def test_empty_events_are_refused():
    with pytest.raises(ValueError, match="at least one event, got an empty input"):
        session_batches(make_events([]), make_spec(), k=1)


def test_a_non_numeric_value_names_the_column_the_type_and_the_value():
    events = make_events([("s", "a", 1, 1.0, "d"), ("s", "b", 2, "cheap", "d")])
    with pytest.raises(ValueError, match=r"column 'price': expected numbers \(FP64\), got 'cheap'"):
        session_batches(events, make_spec(), k=1)


def test_a_fractional_or_missing_integer_is_refused():
    with pytest.raises(ValueError, match=r"column 'timestamp': expected integers \(INT64\), got 1.5"):
        session_batches(make_events([("s", "a", 1.5, 1.0, "d")]), make_spec(), k=1)
    with pytest.raises(ValueError, match=r"column 'timestamp': expected integers \(INT64\) on every event"):
        session_batches(make_events([("s", "a", None, 1.0, "d"), ("s", "b", 2, 1.0, "d")]), make_spec(), k=1)


def test_spec_reads_grpc_metadata_and_config_json():
    metadata = {"inputs": [{"name": name, "datatype": datatype, "shape": ["-1", "-1"]}
                           for name, datatype in DATATYPES.items()]}
    parameters = {"sequence_key": "session_id", "time_column": "timestamp", "item_column": "item_id",
                  "context_columns": "device, user", "max_events": "50", "max_k": "100",
                  "exclude_seen": "true", "max_request_events": "100000"}
    config = {"max_batch_size": 64, "parameters": {key: {"string_value": value} for key, value in parameters.items()}}
    spec = RequestSpec.from_server(metadata, config)
    assert (spec.max_batch_size, spec.max_events, spec.max_k, spec.exclude_seen) == (64, 50, 100, True)
    assert spec.context_columns == ("device", "user")
    assert spec.event_columns == ["item_id", "timestamp", "price", "device"]
    del config["parameters"]["max_k"]
    with pytest.raises(ValueError, match=r"missing \['max_k'\]"):
        RequestSpec.from_server(metadata, config)


def test_requests_stay_within_the_servers_sessions_and_events_bounds():
    lengths = [1, 9, 2, 2, 10, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4]
    events = make_events([(f"s{s:02d}", f"i{t}", t, 1.0, "d") for s, n in enumerate(lengths) for t in range(n)])
    batches = session_batches(events, make_spec(max_batch_size=8, max_request_events=20), k=1)
    shapes = [batch.inputs["item_id"].shape for batch in batches]
    assert all(rows <= 8 and rows * width <= 20 for rows, width in shapes), shapes
    assert [s for batch in batches for s in batch.session_ids] == [f"s{s:02d}" for s in range(len(lengths))]
    assert [int(n) for batch in batches for n in batch.inputs["event_count"].ravel()] == lengths
    assert shapes == [(2, 9), (2, 2), (2, 10), (6, 3), (5, 1), (1, 4)]  # greedy: each request as full as the bounds allow
