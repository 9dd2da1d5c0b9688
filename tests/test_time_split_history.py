"""Sequential view, time split: a validation or test row holds the user's earlier events too
(the last max_length up to the window's end, in time order), as the client sends the full
history at serving time, and its target (the last event) is the window's. The evaluated
prediction for a test row equals the served path's on the user's raw history."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from client.sessions import EVENT_COUNT, RequestSpec, _datatype, session_batches
from export.configs import WIRE
from export.torchscript import input_names, kept_events
from export.transform_spec import compile_workflow
from model_repository.transform.compiled import RequestTransform
from tests.conftest import ROOT
from training import prepare
from training.data import prepared, views
from training.config import load_config
from training.data.datasets import synthetic
from training.batches import SequenceData
from training.model.features import feature_spec
from training.model.next_item import NextItemModel

MAX_LENGTH = 12
WINDOW_DAYS = 2.0


@pytest.fixture(scope="module")
def sequential_time(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sequential_time")
    raw = synthetic.generate_events(synthetic.SyntheticConfig(n_events=20_000, n_users=400, seed=3))  # users come back
    raw.to_parquet(folder / "events.parquet", index=False)
    (folder / "mapping.json").write_text(json.dumps(synthetic.COLUMNS.to_dict()))
    out = folder / "prepared"
    prepare.run(prepare.PrepareArgs(dataset=str(folder / "events.parquet"), mapping=folder / "mapping.json", view="sequential",
                                    split="time", window_days=WINDOW_DAYS, max_length=MAX_LENGTH, out=out))
    events, columns, key = prepare.raw_events(out)
    events = views.sort_events(events, key, columns.time)
    windows = views.window_index(events, key, columns.time, WINDOW_DAYS, per_event=True)
    return out, events.assign(window=windows), prepared.load_summary(out)["windows"]


def _row_items(folder, split: str) -> dict:
    """user -> original item ids of the split's row (None for codes without an id: OOV)."""
    vocabulary = prepared.item_vocabulary(folder)
    frame = prepared.read_split(folder, split)
    return {user: [vocabulary.get(code) for code in codes] for user, codes in zip(frame["user_id"], frame["item_id_list"])}


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_a_held_out_row_holds_the_users_earlier_events_and_ends_with_the_windows(sequential_time, split):
    folder, events, plan = sequential_time
    last_window = plan[split][-1]
    known = set(prepared.item_vocabulary(folder))
    rows = _row_items(folder, split)
    with_history = 0
    for user, user_events in events[events["window"] <= last_window].groupby("user_id", sort=False):
        in_split = user_events["window"].isin(plan[split])
        if not in_split.any():
            assert user not in rows, f"user {user} has no {split} events but a {split} row"
            continue
        expected = [item if item in known else None for item in user_events["item_id"]][-MAX_LENGTH:]
        assert rows[user] == expected, f"{split} row of user {user}: its events up to window {last_window}, last {MAX_LENGTH}"
        assert user_events["window"].iloc[-1] in plan[split], "the target (last event) is the split's own"
        with_history += split != "train" and not in_split.all()
    assert split == "train" or with_history >= 50, "few users with history: the check would be weak"


def test_the_evaluated_prediction_equals_the_served_path_on_the_users_full_history(sequential_time):
    folder, events, plan = sequential_time
    config = load_config(ROOT / "training" / "configs" / "gpt2_clm.yaml",
                         [f"model.max_length={MAX_LENGTH - 1}", "model.d_model=16", "model.n_layers=1", "model.n_heads=1"])
    torch.manual_seed(0)  # the model reads one event less than a row holds: a row's inputs, then its target
    model = NextItemModel(feature_spec(folder), config.model).eval()
    test = SequenceData(folder, "test", model.spec)
    frame = prepared.read_split(folder, "test")
    users = frame["user_id"][frame["item_id_list"].map(len) >= 2].to_numpy()  # the rows SequenceData keeps
    assert len(users) == len(test)
    earlier = events[events["window"] < plan["test"][0]]["user_id"].unique()
    rows = np.flatnonzero(np.isin(users, earlier))[:40]
    assert len(rows) == 40, "few test users with earlier events: the check would be weak"
    with torch.no_grad():
        evaluated = model.next_item_scores({k: v for k, v in test.batch(rows, drop_last_event=True).items() if k != "targets"})

    served = compile_workflow(folder, input_names(model), kept_events(model))
    transform = RequestTransform(folder, spec=served)
    datatypes = {raw["name"]: _datatype(WIRE[raw["dtype"]]) for raw in served["inputs"]}
    request = RequestSpec(datatypes={**datatypes, EVENT_COUNT: "INT32", "k": "INT32"}, max_batch_size=len(rows),
                          sequence_key="user_id", time_column="timestamp", item_column="item_id",
                          context_columns=tuple(o["source"] for o in served["outputs"] if o["kind"] == "context"),
                          max_events=served["max_events"], max_k=1, exclude_seen=False,
                          max_request_events=len(rows) * served["max_events"])
    history = events[events["user_id"].isin(users[rows])]
    history = history.groupby("user_id", sort=False).head(-1)  # all but the target, the last event
    history = history.set_index("user_id").loc[users[rows]].reset_index()  # sessions in the test rows' order
    (batch,) = session_batches(history, request, k=1)
    assert list(batch.session_ids) == list(users[rows])
    outputs = transform.transform({name: batch.inputs[name] for name in transform.inputs}, batch.inputs[EVENT_COUNT])
    inputs = {name: torch.from_numpy(outputs[name]) for name in model.spec.list_columns}
    inputs.update({name: torch.from_numpy(outputs[name][:, 0]) for name in model.spec.context_columns})
    with torch.no_grad():
        answered = model.next_item_scores(inputs)
    torch.testing.assert_close(evaluated, answered, atol=1e-5, rtol=1e-5)
    assert torch.equal(evaluated.topk(10).indices, answered.topk(10).indices)
