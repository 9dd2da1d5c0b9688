"""Serving a session-aware model: a request row is a user's current session plus their earlier
events (history inputs); the transform keeps those strictly before the session, the last ones
the model reads, and encodes them as prepare does. The evaluated prediction of a prepared test
row equals the served path on the user's raw events; the client builds the requests offline
prediction builds (sessions from the session column or cut by inactivity); the real Triton
server answers what the offline model answers over gRPC for 200+ held-out users with history,
and refuses a bad history input while it goes on serving."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from client.recommender import RecommenderClient
from client.sessions import EVENT_COUNT, session_batches
from export.repository import ExportOptions, export
from export.torchscript import history_events, input_names, kept_events
from export.transform_spec import compile_workflow
from model_repository.transform.compiled import RequestError, RequestTransform
from serve.server import TritonServer
from tests.conftest import ROOT, client_spec, train_run
from training import prepare
from training.data import prepared, request_transform
from training.config import load_config
from training.batches import SequenceData
from training.data.datasets import synthetic
from training.model.features import feature_spec
from training.model.next_item import NextItemModel
from training.recommend import recommend

MAX_LENGTH = 12
HISTORY = 8  # history items the models read: fewer than the prepared rows hold
TINY = ["model.d_model=16", "model.n_layers=1", "model.n_heads=1", f"model.history_length={HISTORY}"]


@pytest.fixture(scope="module")
def session_aware(tmp_path_factory):
    """Synthetic users with several sessions, cut by a 30-minute gap (the mapping names no session
    column), time features (gap, hour, the items' age and recent events); leave-one-session-out."""
    folder = tmp_path_factory.mktemp("session_aware")
    synthetic.generate_events(synthetic.SyntheticConfig(n_events=20_000, n_users=400, user_taste=0.8, seed=5)).to_parquet(
        folder / "events.parquet")
    (folder / "mapping.yaml").write_text(synthetic.mapping_yaml().replace("session: session_id\n", ""))
    out = folder / "prepared"
    prepare.run(prepare.PrepareArgs(dataset=str(folder / "events.parquet"), mapping=folder / "mapping.yaml",
                                    view="session-aware", split="loo", max_length=MAX_LENGTH, time_features=("gap", "hour", "age", "recent"),
                                    out=out))
    events, columns, key = prepare.raw_events(out)
    return out, events, columns, key


def _held_out(events: pd.DataFrame, columns, key, users) -> pd.DataFrame:
    """The users' events without their last one (the target of their last session), in file order."""
    chosen = events[events[columns.user].isin(users)]
    last = chosen.sort_values(columns.time, kind="stable").groupby(columns.user).tail(1).index
    return chosen.drop(index=last)


def _model(folder, history: str) -> NextItemModel:
    config = load_config(ROOT / "training" / "configs" / "gpt2_session.yaml",
                         [f"model.max_length={MAX_LENGTH - 1}", f"model.history={history}", *TINY])
    torch.manual_seed(0)
    model = NextItemModel(feature_spec(folder), config.model).eval()
    with torch.no_grad():  # weights large enough that history moves the ranking
        for name, weight in model.named_parameters():
            if weight.dim() == 2 and "norm" not in name:
                weight.normal_(std=0.3)
    return model


def _served_inputs(model, outputs: dict) -> dict:
    inputs = {name: torch.from_numpy(outputs[name]) for name in model.spec.list_columns}
    inputs.update({name: torch.from_numpy(outputs[name][:, 0]) for name in model.spec.context_columns})
    inputs[model.spec.history] = torch.from_numpy(outputs[model.spec.history])
    return inputs


@pytest.mark.parametrize("history", ["prefix", "pooled"])
def test_the_evaluated_prediction_equals_the_served_path_on_the_users_raw_events(session_aware, history):
    folder, events, columns, key = session_aware
    model = _model(folder, history)
    test = SequenceData(folder, "test", model.spec)
    frame = prepared.read_split(folder, "test")
    users = events.groupby(key)[columns.user].first().reindex(frame[key]).to_numpy()[test.rows]
    # sessions the prepared row holds whole (a longer one's row starts its gap feature at its cut, a request at the
    # event the model reads first), with history
    whole = frame["item_id_list"].map(len).to_numpy()[test.rows] < MAX_LENGTH
    with_history = np.flatnonzero(whole & (frame[prepared.HISTORY_COLUMN].map(len).to_numpy()[test.rows] > 0))
    assert len(with_history) >= 200, "few test users with history: the check would be weak"
    rows = with_history[:200]
    batch = {k: v for k, v in test.batch(rows, drop_last_event=True).items() if k != "targets"}
    with torch.no_grad():
        evaluated = model.next_item_scores(batch)
        without = model.next_item_scores({**batch, model.spec.history: torch.zeros_like(batch[model.spec.history])})
    assert not torch.equal(evaluated.topk(10).indices, without.topk(10).indices), "history changes no ranking: a weak check"

    served = compile_workflow(folder, input_names(model), kept_events(model), history_events=history_events(model))
    assert served["history"]["events"] == HISTORY
    transform = RequestTransform(folder, spec=served)
    (request,) = session_batches(_held_out(events, columns, key, users[rows]), client_spec(served, served["history"]["source"], len(rows)), k=1)
    assert sorted(request.session_ids) == sorted(users[rows])
    outputs = transform.transform({name: request.inputs[name] for name in [*transform.inputs, *transform.history_inputs.values()]},
                                  request.inputs[EVENT_COUNT])
    with torch.no_grad():
        answered = model.next_item_scores(_served_inputs(model, outputs))
    order = pd.Index(request.session_ids).get_indexer(users[rows])
    torch.testing.assert_close(evaluated, answered[order], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("session_column", [True, False])
def test_the_client_sends_what_offline_prediction_reads(session_aware, session_column):
    """Current session and history per user, from the session column or cut by the 30-minute gap."""
    folder, events, columns, key = session_aware
    served = compile_workflow(folder, [f"{columns.item}_list"], MAX_LENGTH, history_events=HISTORY)
    users = events[columns.user].drop_duplicates().to_numpy()[:150]
    chosen = events[events[columns.user].isin(users)].sample(frac=1.0, random_state=0)  # any order of events
    chosen = chosen if session_column else chosen.drop(columns=[key])
    (request,) = session_batches(chosen, client_spec(served, served["history"]["source"], len(users)), k=1)
    transform = RequestTransform(folder, spec=served)
    sent = transform.transform({name: request.inputs[name] for name in [*transform.inputs, *transform.history_inputs.values()]},
                               request.inputs[EVENT_COUNT])
    keys, offline, _ = request_transform.transform_events(folder, chosen, spec=served)
    assert sorted(keys) == sorted(request.session_ids) == sorted(users)
    order = pd.Index(keys).get_indexer(request.session_ids)
    assert (request.inputs["history_count"] > 0).sum() > 100
    for name in sent:
        np.testing.assert_array_equal(sent[name], offline[name][order], err_msg=name)


def test_the_history_read_is_the_last_events_strictly_before_the_session_in_time_order(session_aware):
    folder = session_aware[0]
    served = compile_workflow(folder, ["item_id_list"], MAX_LENGTH, history_events=3)
    transform = RequestTransform(folder, spec=served)
    items = prepared.item_vocabulary(folder).dropna()
    a, b, c, d, e = (int(item) for item in items.iloc[:5])
    codes = {int(item): code for code, item in items.items()}
    session = {"item_id": np.array([[a, b], [c, 0]]), "timestamp": np.array([[100, 110], [50, 0]]),
               "category": np.array([[b"c1", b"c1"], [b"c1", b""]], dtype=object), "price": np.ones((2, 2)),
               "device": np.array([[b"app"] * 2] * 2, dtype=object), "user_id": np.array([[1, 1], [2, 0]]),
               # row 0: sent out of order, one at the session's start and one after it (not history), ties in order
               "history_item_id": np.array([[e, d, c, b, a, e], [a, 0, 0, 0, 0, 0]]),
               "history_timestamp": np.array([[90, 20, 20, 100, 120, 10], [10, 0, 0, 0, 0, 0]]),
               "history_count": np.array([[6], [0]], dtype=np.int32)}
    out = transform.transform({name: session[name] for name in [*transform.inputs, *transform.history_inputs.values()]},
                              np.array([2, 1]))
    assert out["history_item_list"].tolist() == [[codes[d], codes[c], codes[e]], [0, 0, 0]]
    with pytest.raises(RequestError, match="'history_count': expected 0..6"):
        transform.transform({**session, "history_count": np.array([[7], [0]], dtype=np.int32)}, np.array([2, 1]))


@pytest.fixture(scope="module")
def history_server(session_aware, tmp_path_factory):
    folder = session_aware[0]
    runs = tmp_path_factory.mktemp("history_runs")
    repo = runs / "repo"
    for history, exclude_seen in (("prefix", False), ("pooled", True)):
        run = train_run(folder, runs / history, "gpt2_session.yaml", f"model.history={history}", *TINY)
        export(run, repo, ExportOptions(name=history, torch_runtime="python", max_batch_size=16, top_k=20,
                                        exclude_seen=exclude_seen))
    with TritonServer(repo, log_path=runs / "server.log") as running:
        yield running, runs


@pytest.mark.parametrize("history, exclude_seen", [("prefix", False), ("pooled", True)])
def test_the_served_ensemble_answers_what_the_offline_model_answers_for_users_with_history(
        session_aware, history_server, history, exclude_seen):
    from training.predict import predict

    folder, events, columns, key = session_aware
    server, runs = history_server
    test = prepared.read_split(folder, "test")
    with_history = test[test[prepared.HISTORY_COLUMN].map(len) > 0][key]
    users = events.groupby(key)[columns.user].first().reindex(with_history).unique()
    assert len(users) >= 200
    requests = _held_out(events, columns, key, users).drop(columns=[key])  # sessions cut by the client, as prepare cut them
    expected = recommend(runs / history, requests, 10, exclude_seen=exclude_seen)
    with RecommenderClient(server.grpc_url, model=history) as client:
        client.wait_ready(60)
        assert client.spec.history_events == HISTORY and client.spec.session_gap_s == 1800
        got = client.recommend(requests, k=10)
    assert set(got) == set(expected) == set(users)
    for user, (ids, scores) in expected.items():
        assert got[user].item_ids == ids, user
        np.testing.assert_allclose(got[user].scores, scores, atol=1e-4, rtol=0, err_msg=str(user))
    written = predict(runs / history, requests, 10, exclude_seen)
    for user, rows in written.groupby(columns.user):
        assert rows["item_id"].tolist() == got[user].item_ids


def test_a_bad_history_input_is_refused_naming_it_and_the_server_goes_on(history_server):
    server, _ = history_server
    client = grpcclient.InferenceServerClient(server.grpc_url)

    def ask(**overrides):
        inputs = {"item_id": np.array([[100_001, 100_002]]), "timestamp": np.array([[100, 110]]),
                  "category": np.array([[b"c1", b"c2"]], dtype=object), "price": np.array([[1.0, 2.0]]),
                  "device": np.array([[b"app", b"app"]], dtype=object), "user_id": np.array([[4, 4]]),
                  "history_item_id": np.array([[100_003, 100_004]]), "history_timestamp": np.array([[10, 20]]),
                  "history_count": np.array([[2]], dtype=np.int32), "event_count": np.array([[2]], dtype=np.int32),
                  "k": np.array([[5]], dtype=np.int32), **overrides}
        tensors = []
        for name, values in inputs.items():
            tensor = grpcclient.InferInput(name, list(values.shape), np_to_triton_dtype(values.dtype))
            tensor.set_data_from_numpy(values)
            tensors.append(tensor)
        return client.infer("prefix", tensors).as_numpy("item_ids")

    for overrides, named in (({"history_count": np.array([[3]], dtype=np.int32)}, "history_count"),
                             ({"history_timestamp": np.array([[10, 20, 30]])}, "history_timestamp")):
        with pytest.raises(InferenceServerException) as refused:
            ask(**overrides)
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and named in refused.value.message()
    assert ask().shape == (1, 5)
    assert ask(history_count=np.array([[0]], dtype=np.int32)).shape == (1, 5)  # no history: a first session
