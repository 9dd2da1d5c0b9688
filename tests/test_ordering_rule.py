"""The ordering rule (a session's events by time, ties in their order, the last max_events kept,
context values from the earliest event) is defined for the served and offline paths once, in
model_repository/transform/compiled.py; the client keeps a copy so that it imports nothing but the
contract. Here the two meet on the same events: the client's requests, through the transform, give
what the offline path gives when it sends every event of a session unsorted."""
from __future__ import annotations

import numpy as np
import pandas as pd

from client.sessions import EVENT_COUNT, K, RequestSpec, _datatype, session_batches
from export.configs import WIRE
from model_repository.transform.compiled import RequestTransform
from training.data import request_transform
from training.data.datasets.synthetic import DEVICES
from training.prepare import raw_events


def _client_spec(spec: dict, item: str, rows: int) -> RequestSpec:
    datatypes = {raw["name"]: _datatype(WIRE[raw["dtype"]]) for raw in spec["inputs"]}
    datatypes.update({EVENT_COUNT: "INT32", K: "INT32"})
    return RequestSpec(datatypes=datatypes, max_batch_size=rows, sequence_key=spec["sequence_key"],
                       time_column=spec["time_column"], item_column=item,
                       context_columns=tuple(o["source"] for o in spec["outputs"] if o["kind"] == "context"),
                       max_events=spec["max_events"], max_k=1, exclude_seen=False, max_request_events=rows * spec["max_events"])


def test_the_clients_copy_of_the_ordering_rule_gives_the_transform_what_the_offline_path_gives(prepared_synthetic):
    spec = request_transform.load(prepared_synthetic)
    events, columns, key = raw_events(prepared_synthetic)
    rng = np.random.default_rng(0)
    sessions, _ = pd.factorize(events[key])
    events = events[sessions < 1600].copy()
    events[key] = sessions[sessions < 1600] // 4  # four sessions as one: many longer than max_events
    events[columns.time] = events[columns.time] // 1800 * 1800  # half-hour clock: ties within sessions
    events["device"] = rng.choice(DEVICES, len(events))  # context that changes within a session
    events = events.sample(frac=1.0, random_state=0)  # any file order

    lengths = events.groupby(key).size()
    assert (lengths > spec["max_events"]).sum() > 100, "few sessions are cut: a weak check of 'the last max_events'"
    assert events.duplicated([key, columns.time]).sum() > 1000, "few ties in time: a weak check of the stable sort"
    assert any(o["source"] == "device" and o["kind"] == "context" for o in spec["outputs"])

    keys, offline, _ = request_transform.transform_events(prepared_synthetic, events)
    transform = RequestTransform(prepared_synthetic)
    row_of = pd.Index(keys)
    batches = session_batches(events, _client_spec(spec, columns.item, 64), k=1)
    assert sum(len(batch.session_ids) for batch in batches) == len(keys) == 400
    for batch in batches:
        sent = transform.transform({name: batch.inputs[name] for name in transform.inputs}, batch.inputs[EVENT_COUNT])
        rows = row_of.get_indexer(batch.session_ids)
        for name in sent:
            np.testing.assert_array_equal(sent[name], offline[name][rows], err_msg=name)
