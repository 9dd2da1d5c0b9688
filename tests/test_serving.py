"""The exported ensemble on the real Triton server answers what the offline model answers,
over gRPC and HTTP, alone and under concurrent (dynamically batched) requests, and refuses
bad requests with INVALID_ARG naming the input while it goes on serving."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client.recommender import RecommenderClient
from export.repository import ExportOptions, export
from serve.server import TritonServer
from tests.conftest import PYTHON, ROOT
from training.prepare import raw_events
from training.recommend import recommend
from training.data.views import held_out

K = 10
MAX_BATCH = 16


@pytest.fixture(scope="module")
def server(ml1m_run, synthetic_runs, tmp_path_factory):
    repo = tmp_path_factory.mktemp("serving") / "repo"
    export(ml1m_run, repo, ExportOptions(name="ml1m", torch_runtime="python", max_batch_size=MAX_BATCH, top_k=50))
    export(synthetic_runs[0], repo, ExportOptions(name="synth", torch_runtime="python", max_batch_size=MAX_BATCH, top_k=20))
    export(synthetic_runs[0], repo, ExportOptions(name="synth_unseen", torch_runtime="python", max_batch_size=MAX_BATCH,
                                                  top_k=20, exclude_seen=True))  # the same run, its sessions' items left out
    with TritonServer(repo, log_path=repo.parent / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def ml1m_held_out(prepared_ml1m):
    return held_out(raw_events(prepared_ml1m)[0], "user_id", "timestamp", 240, seed=3)[0]


@pytest.fixture(scope="module")
def ml1m_expected(ml1m_run, ml1m_held_out):
    return recommend(ml1m_run, ml1m_held_out, K, exclude_seen=True)


def _assert_same(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for session, (ids, scores) in expected.items():
        assert got[session].item_ids == ids, session
        np.testing.assert_allclose(got[session].scores, scores, atol=1e-4, rtol=0, err_msg=str(session))


def _one_by_one(client: RecommenderClient, events, sessions) -> dict:
    answers = {}
    for session in sessions:
        answers.update(client.recommend(events[events["user_id"] == session], k=K))
    return answers


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ensemble_answers_what_the_offline_model_answers_one_request_at_a_time(server, ml1m_held_out, ml1m_expected, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with RecommenderClient(url, protocol=protocol, model="ml1m") as client:
        client.wait_ready(30)
        _assert_same(_one_by_one(client, ml1m_held_out, list(ml1m_expected)), ml1m_expected)
        _assert_same(client.recommend(ml1m_held_out, k=K), ml1m_expected)  # batches of MAX_BATCH sessions


@pytest.mark.parametrize("model, exclude_seen", [("synth", False), ("synth_unseen", True)])
def test_training_predict_writes_what_the_served_ensemble_answers(server, synthetic_runs, prepared_synthetic, model, exclude_seen):
    from training.predict import predict

    events, _, key = raw_events(prepared_synthetic)
    events = held_out(events, key, "timestamp", 40, seed=5)[0]
    with RecommenderClient(server.grpc_url, model=model) as client:
        client.wait_ready(30)
        assert client.spec.exclude_seen == exclude_seen and events.groupby(key).size().max() > client.spec.max_events
        served = client.recommend(events, k=K)
    predicted = predict(synthetic_runs[0], events, K, exclude_seen, sessions_per_chunk=7)
    assert list(predicted[key].drop_duplicates()) == list(served)
    for session, rows in predicted.groupby(key, sort=False):
        assert rows["item_id"].tolist() == list(served[session].item_ids), session
        np.testing.assert_allclose(rows["score"].to_numpy(), served[session].scores, atol=1e-4, rtol=0, err_msg=str(session))


def _executions(server, model: str) -> tuple[float, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()

    def metric(name: str) -> float:
        pattern = rf'^{name}{{model="{model}",version="\d+"}} ([0-9.e+]+)$'
        return sum(float(m) for m in re.findall(pattern, text, flags=re.M))

    return metric("nv_inference_exec_count"), metric("nv_inference_request_success")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_dynamic_batching_of_concurrent_requests_does_not_change_answers(server, ml1m_held_out, ml1m_expected, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    sessions = list(ml1m_expected)
    steps = ("ml1m_transform", "ml1m_model", "ml1m_topk")
    before = {step: _executions(server, step) for step in steps}
    with ThreadPoolExecutor(16) as pool:
        clients = [RecommenderClient(url, protocol=protocol, model="ml1m") for _ in range(16)]
        parts = pool.map(lambda i: _one_by_one(clients[i], ml1m_held_out, sessions[i::16]), range(16))
        answers = {session: answer for part in parts for session, answer in part.items()}
    _assert_same(answers, ml1m_expected)
    for step in steps:  # sessions of different lengths batch at every step (ragged transform, padded model inputs)
        executions, requests = np.subtract(_executions(server, step), before[step])
        assert requests == len(sessions), step
        assert executions < len(sessions), f"{step}: no request was batched with another"
    with RecommenderClient(url, protocol=protocol, model="ml1m") as client:
        _assert_same(asyncio.run(client.recommend_async(ml1m_held_out, k=K)), ml1m_expected)


def test_concurrent_sessions_of_different_lengths_share_batches_in_the_transform_and_model_steps(server):
    """Each client sends sessions of its own length: Triton batches requests of different shapes only
    where an input allows ragged batches (the transform) or the shapes were made equal (the transform
    pads the model's inputs to one width). Without either, every request would run alone there."""
    steps = ("synth_transform", "synth_model")
    before = {step: _executions(server, step) for step in steps}
    lengths, repeats = range(1, 12), 12  # the synthetic model keeps 11 events: every length reaches it as is

    def ask(length: int) -> None:
        items = 100_001 + np.arange(length, dtype=np.int64)[None, :] % 50
        for _ in range(repeats):
            ids, _ = _request(server, item_id=items, timestamp=np.arange(length, dtype=np.int64)[None, :] * 10,
                              category=np.full((1, length), b"c1", dtype=object), price=np.full((1, length), 5.0),
                              device=np.full((1, length), b"app", dtype=object), user_id=np.full((1, length), 4),
                              event_count=np.array([[length]], dtype=np.int32))
            assert ids.shape == (1, 5)

    with ThreadPoolExecutor(len(lengths)) as pool:
        list(pool.map(ask, lengths))
    for step in steps:
        executions, requests = np.subtract(_executions(server, step), before[step])
        assert requests == len(lengths) * repeats, step
        assert executions < requests, f"{step}: no two sessions of different lengths shared an execution"


# --- bad requests, on the synthetic ensemble (integer item ids, a price, a device context) ---

def _request(server, **overrides):
    """A good one-session request for `synth`, with inputs replaced (None: left out)."""
    inputs = {
        "item_id": np.array([[100_001, 100_002, 100_003]], dtype=np.int64),
        "timestamp": np.array([[10, 20, 30]], dtype=np.int64),
        "category": np.array([[b"c1", b"c2", b"c1"]], dtype=object),
        "price": np.array([[9.5, 20.0, 3.25]], dtype=np.float64),
        "device": np.array([[b"mobile", b"mobile", b"mobile"]], dtype=object),
        "user_id": np.array([[4, 4, 4]], dtype=np.int64),
        "event_count": np.array([[3]], dtype=np.int32),
        "k": np.array([[5]], dtype=np.int32),
    }
    inputs.update(overrides)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensors = []
    for name, values in inputs.items():
        if values is None:
            continue
        datatype = {"O": "BYTES", "i": "INT64" if values.dtype == np.int64 else "INT32", "f": "FP64" if values.dtype == np.float64 else "FP32"}[values.dtype.kind]
        tensor = grpcclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    result = client.infer("synth", tensors)
    return result.as_numpy("item_ids"), result.as_numpy("scores")


def _synth_inputs(server):
    config = grpcclient.InferenceServerClient(server.grpc_url).get_model_config("synth", as_json=True)["config"]
    return {i["name"] for i in config["input"]}


@pytest.mark.parametrize("case, overrides, named", [
    ("wrong dtype", {"price": np.array([[1, 2, 3]], dtype=np.int32)}, "price"),
    ("wrong rank", {"item_id": np.array([[[100_001, 100_002, 100_003]]], dtype=np.int64)}, "item_id"),
    ("missing input", {"price": None}, "price"),
    ("empty session", {"event_count": np.array([[0]], dtype=np.int32)}, "event_count"),
    ("infinite price", {"price": np.array([[1.0, np.inf, 2.0]])}, "price"),
    ("k above the maximum", {"k": np.array([[21]], dtype=np.int32)}, "'k'"),
    ("k differing between sessions", {name: np.repeat(v, 2, axis=0) for name, v in {
        "item_id": np.array([[100_001]]), "timestamp": np.array([[1]]), "category": np.array([[b"c1"]], dtype=object),
        "price": np.array([[1.0]]), "device": np.array([[b"app"]], dtype=object), "user_id": np.array([[4]]),
        "event_count": np.array([[1]], dtype=np.int32)}.items()} | {"k": np.array([[5], [6]], dtype=np.int32)}, "'k'"),
    ("more sessions than max_batch_size", {name: np.repeat(v, MAX_BATCH + 1, axis=0) for name, v in {
        "item_id": np.array([[100_001]]), "timestamp": np.array([[1]]), "category": np.array([[b"c1"]], dtype=object),
        "price": np.array([[1.0]]), "device": np.array([[b"app"]], dtype=object), "user_id": np.array([[4]]),
        "event_count": np.array([[1]], dtype=np.int32), "k": np.array([[5]], dtype=np.int32)}.items()}, "batch"),
])
def test_bad_request_is_refused_naming_the_input_and_the_server_goes_on(server, case, overrides, named):
    assert _synth_inputs(server) == {"item_id", "timestamp", "category", "price", "device", "user_id", "event_count", "k"}
    with pytest.raises(InferenceServerException) as refused:
        _request(server, **overrides)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", (case, refused.value)
    assert named in refused.value.message(), (case, refused.value.message())
    ids, scores = _request(server)
    assert ids.shape == (1, 5) and np.isfinite(scores).all()


def test_a_session_of_the_most_events_a_request_may_carry_is_cut_to_its_last_events_not_refused(server, tmp_path):
    config = grpcclient.InferenceServerClient(server.grpc_url).get_model_config("synth", as_json=True)["config"]
    n = int(config["parameters"]["max_request_events"]["string_value"])
    rng = np.random.default_rng(0)
    long = {
        "item_id": (100_000 + rng.integers(0, 500, n)).reshape(1, n).astype(np.int64),
        "timestamp": np.arange(n, dtype=np.int64).reshape(1, n),
        "category": np.array([[f"c{i % 20}".encode() for i in range(n)]], dtype=object),
        "price": rng.uniform(1, 100, (1, n)),
        "device": np.array([[b"tablet"] * n], dtype=object),
        "user_id": np.full((1, n), 4, dtype=np.int64),
        "event_count": np.array([[n]], dtype=np.int32),
    }
    repo_transform = json.loads(next((server.model_repository / "synth_transform").glob("*/transform.json")).read_text())
    keep = repo_transform["max_events"]
    cut = {name: values[:, -keep:] for name, values in long.items() if name != "event_count"}
    ids_long, scores_long = _request(server, **long)
    ids_cut, scores_cut = _request(server, **cut, event_count=np.array([[keep]], dtype=np.int32))
    assert ids_long.tolist() == ids_cut.tolist()
    np.testing.assert_allclose(scores_long, scores_cut, atol=1e-5)


def test_unknown_items_map_to_oov_and_still_get_recommendations(server):
    ids, scores = _request(server, item_id=np.array([[7, 8, 9]], dtype=np.int64))
    assert ids.shape == (1, 5) and np.isfinite(scores).all()
    assert all(i >= 100_000 for i in ids[0])  # original ids of known items (from 100,000), never a code


def test_missing_price_takes_the_training_median(server):
    transform = json.loads(next((server.model_repository / "synth_transform").glob("*/transform.json")).read_text())
    (price,) = [o for o in transform["outputs"] if o["source"] == "price"]
    median = next(step["value"] for step in price["steps"] if step["op"] == "fill")
    ids_nan, scores_nan = _request(server, price=np.array([[9.5, np.nan, 3.25]]))
    ids_median, scores_median = _request(server, price=np.array([[9.5, median, 3.25]]))
    ids_other, scores_other = _request(server, price=np.array([[9.5, median * 50 + 7, 3.25]]))
    assert ids_nan.tolist() == ids_median.tolist()
    np.testing.assert_allclose(scores_nan, scores_median, atol=1e-6)
    assert not np.allclose(scores_nan, scores_other), "the price does not reach the model"


# --- the client's command line, its retries, and the demo's last leg ---

def test_client_command_prints_what_the_offline_model_answers(server, ml1m_held_out, ml1m_expected, tmp_path):
    sessions = list(ml1m_expected)[:5]
    requests = tmp_path / "events.csv"
    ml1m_held_out[ml1m_held_out["user_id"].isin(sessions)].to_csv(requests, index=False)
    command = [PYTHON, "-m", "client", "--url", server.grpc_url, "--model", "ml1m", "--input", str(requests),
               "--k", str(K), "--json"]
    printed = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    assert {user: [i["item_id"] for i in items] for user, items in printed.items()} == \
        {user: ml1m_expected[user][0] for user in sessions}
    missing = subprocess.run([*command[:8], str(tmp_path / "none.csv")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode != 0 and "none.csv" in missing.stderr and "Traceback" not in missing.stderr


def test_client_retries_an_unavailable_server_with_backoff_then_raises(tmp_path):
    from serve.server import free_port

    client = RecommenderClient(f"127.0.0.1:{free_port()}", model="ml1m", retries=2, backoff_s=0.25)
    started = time.monotonic()
    with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
        client.spec
    assert time.monotonic() - started >= 0.25 + 0.5  # two retries after 0.25 s and 0.5 s
    with pytest.raises(ConnectionRefusedError, match="nothing listens"):  # no server: told at once, not after the wait
        client.wait_ready(300)
    assert time.monotonic() - started < 60


def test_demo_asks_the_served_model_for_held_out_users(ml1m_run, tmp_path):
    repo = tmp_path / "repo"
    export(ml1m_run, repo, ExportOptions(torch_runtime="python"))
    shown = subprocess.run([PYTHON, "-m", "examples.demo", "--run", str(ml1m_run), "--repo", str(repo), "--users", "2"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    users = re.findall(r": next was .* \((at rank (\d+)|not in the top 10)\)", shown.stdout)
    assert len(users) == 2, shown.stdout
    assert shown.stdout.count("<- the held-out next item") == sum(1 for _, rank in users if rank)  # marked where it is listed
    test = json.loads((ml1m_run / "metrics.json").read_text())["test"]
    model_row = re.search(r"trained [\d.]+ min +([\d.]+) +([\d.]+)", shown.stdout)
    assert model_row and float(model_row[1]) == pytest.approx(test["ndcg@10"], abs=6e-5), shown.stdout
    assert re.search(r"most popular +0\.\d{4} +0\.\d{4}", shown.stdout) and "x most popular's" in shown.stdout
