"""The ordering rule (a session's events by time, ties in their order, the last max_events kept,
context values from the earliest event) is defined for the served and offline paths once, in
model_repository/transform/compiled.py; the client keeps a copy so that it imports nothing but the
contract. Here the two meet on the same events: the client's requests, through the transform, give
what the offline path gives when it sends every event of a session unsorted."""
from __future__ import annotations

import numpy as np
import pandas as pd

from client.sessions import EVENT_COUNT, session_batches
from model_repository.transform.compiled import RequestTransform
from training.data import request_transform
from training.data.datasets.synthetic import DEVICES
from training.prepare import raw_events
from tests.conftest import client_spec


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
    batches = session_batches(events, client_spec(spec, columns.item, 64), k=1)
    assert sum(len(batch.session_ids) for batch in batches) == len(keys) == 400
    for batch in batches:
        sent = transform.transform({name: batch.inputs[name] for name in transform.inputs}, batch.inputs[EVENT_COUNT])
        rows = row_of.get_indexer(batch.session_ids)
        for name in sent:
            np.testing.assert_array_equal(sent[name], offline[name][rows], err_msg=name)
