"""RecommenderClient.recommend_async against the real Triton: at most `max_in_flight` requests
are open at once, a refused batch in the middle raises that first error only after every other
request has been cancelled or has ended (then the channel closes), and the client stays usable."""
from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import warnings

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from client.recommender import RecommenderClient
from export.repository import ExportOptions, export
from serve.server import TritonServer
from tests.conftest import train_run
from training.data.views import held_out

MAX_BATCH = 2  # sessions per request: many requests from a few sessions
SESSIONS = 40  # held out; those of one event are left out
PROTOCOLS = ("grpc", "http")
REFUSED = ("StatusCode.INVALID_ARGUMENT", "400")  # INVALID_ARG over gRPC and HTTP


@pytest.fixture(scope="module")
def server(prepared_synthetic, tmp_path_factory):
    folder = tmp_path_factory.mktemp("client_async")
    run = train_run(prepared_synthetic, folder / "run", "bert_mlm.yaml", "model.d_model=16", "model.n_layers=1",
                    "model.n_heads=1")
    export(run, folder / "repo", ExportOptions(name="synth", torch_runtime="python", max_batch_size=MAX_BATCH, top_k=5))
    with TritonServer(folder / "repo", log_path=folder / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def sessions(synthetic_events):
    return held_out(synthetic_events, "session_id", "timestamp", SESSIONS, seed=0)[0]


class Calls:
    """Wraps the asyncio client's `infer` and `close`: requests open now and at most, how each
    ended, and how many were open when the channel closed."""

    def __init__(self, monkeypatch, protocol: str):
        self.open = self.most_open = self.started = 0
        self.ended: list[str] = []
        self.open_at_close: list[int] = []
        aio = importlib.import_module(f"tritonclient.{protocol}.aio").InferenceServerClient
        infer, close = aio.infer, aio.close

        async def counted_infer(client, *args, **kwargs):
            self.open += 1
            self.started += 1
            self.most_open = max(self.most_open, self.open)
            try:
                result = await infer(client, *args, **kwargs)
                self.ended.append("answered")
                return result
            except asyncio.CancelledError:
                self.ended.append("cancelled")
                raise
            except Exception:
                self.ended.append("failed")
                raise
            finally:
                self.open -= 1

        async def counted_close(client, *args, **kwargs):
            self.open_at_close.append(self.open)
            return await close(client, *args, **kwargs)

        monkeypatch.setattr(aio, "infer", counted_infer)
        monkeypatch.setattr(aio, "close", counted_close)


def _url(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.mark.parametrize("max_in_flight", [0, -1, 2.5, True, "4"])
def test_max_in_flight_must_be_a_positive_integer(max_in_flight):
    with pytest.raises(ValueError, match=rf"max_in_flight: expected an integer >= 1 .*got {max_in_flight!r}$"):
        RecommenderClient("127.0.0.1:1", max_in_flight=max_in_flight)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_more_than_max_in_flight_requests_are_open_and_answers_match_the_sync_client(
        server, sessions, monkeypatch, protocol):
    with RecommenderClient(_url(server, protocol), protocol=protocol, model="synth", max_in_flight=3) as client:
        client.wait_ready(30)
        expected = client.recommend(sessions, k=5)
        calls = Calls(monkeypatch, protocol)
        answers = asyncio.run(client.recommend_async(sessions, k=5))
    assert calls.started == -(-len(expected) // MAX_BATCH) > 3
    assert calls.most_open == 3  # the cap is reached and never passed
    assert calls.open_at_close == [0]
    assert list(answers) == list(expected)
    for session, answer in expected.items():
        assert answers[session].item_ids == answer.item_ids
        np.testing.assert_allclose(answers[session].scores, answer.scores, atol=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_refused_batch_raises_its_error_after_the_others_ended_and_the_client_stays_usable(
        server, sessions, monkeypatch, caplog, protocol):
    bad_session = sessions["session_id"].drop_duplicates().iloc[4 * MAX_BATCH]  # the fifth request of many
    bad = sessions.assign(price=sessions["price"].where(sessions["session_id"] != bad_session, np.inf))
    cap = 3
    with RecommenderClient(_url(server, protocol), protocol=protocol, model="synth", max_in_flight=cap) as client:
        client.wait_ready(30)
        expected = client.recommend(sessions, k=5)
        calls = Calls(monkeypatch, protocol)
        with warnings.catch_warnings(record=True) as warned, caplog.at_level(logging.WARNING, logger="asyncio"):
            warnings.simplefilter("always")
            with pytest.raises(InferenceServerException) as refused:
                asyncio.run(client.recommend_async(bad, k=5))
            gc.collect()
        assert str(refused.value.status()) in REFUSED and "input 'price'" in refused.value.message()
        assert calls.ended.count("failed") == 1 and calls.open == 0
        assert len(calls.ended) == calls.started  # every request sent ended (answered or cancelled) ...
        assert calls.open_at_close == [0]  # ... before the channel closed
        assert calls.started <= 5 + cap  # the requests after the error's were never sent
        assert not [str(w.message) for w in warned if issubclass(w.category, ResourceWarning)
                    or "unclosed" in str(w.message).lower()]
        assert not [r.getMessage() for r in caplog.records if "destroyed" in r.getMessage()
                    or "never retrieved" in r.getMessage()]
        again = asyncio.run(client.recommend_async(sessions, k=5))
    assert {s: a.item_ids for s, a in again.items()} == {s: a.item_ids for s, a in expected.items()}
