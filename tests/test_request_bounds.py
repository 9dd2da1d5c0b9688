"""The served transform bounds the events of one request (summed over its sessions) and the bytes
of every string value, as the step's config says (written by export); a request above a bound is
refused with INVALID_ARG naming the input, the limit and the received value, and the server goes on."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from export.configs import read_config
from export.repository import ExportOptions, export
from serve.server import TritonServer

SYNTH = dict(name="synth", torch_runtime="python", max_batch_size=16, top_k=20)
MAX_EVENTS, MAX_ID_BYTES = 40, 16  # tight bounds for the served export, below what its sessions may carry


@pytest.fixture(scope="module")
def server(synthetic_runs, tmp_path_factory):
    repo = tmp_path_factory.mktemp("bounds") / "repo"
    export(synthetic_runs[0], repo, ExportOptions(**SYNTH, max_request_events=MAX_EVENTS, max_id_bytes=MAX_ID_BYTES))
    with TritonServer(repo, log_path=repo.parent / "server.log") as running:
        yield running


def _request(server, sessions: int, events: int, text: bytes = b"c1"):
    """`sessions` sessions of `events` events each; every string value is `text`."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    config = client.get_model_config("synth", as_json=True)["config"]
    tensors = []
    for spec in config["input"]:
        name, dtype = spec["name"], spec["data_type"]
        if name in ("event_count", "k"):
            values = np.full((sessions, 1), events if name == "event_count" else 5, dtype=np.int32)
        elif dtype == "TYPE_STRING":
            values = np.full((sessions, events), text, dtype=object)
        elif dtype == "TYPE_FP64":
            values = np.full((sessions, events), 5.0)
        else:
            values = np.tile(100_001 + np.arange(events, dtype=np.int64), (sessions, 1))
        tensor = grpcclient.InferInput(name, list(values.shape), {"O": "BYTES", "i": "INT32" if values.dtype == np.int32 else "INT64",
                                                                  "f": "FP64"}[values.dtype.kind])
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    return client.infer("synth", tensors).as_numpy("item_ids")


def _refused(server, *args, **kwargs) -> str:
    with pytest.raises(InferenceServerException) as refused:
        _request(server, *args, **kwargs)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", refused.value
    assert _request(server, 1, 3).shape == (1, 5), "the server stopped answering after a refused request"
    return refused.value.message()


def test_the_bounds_are_the_transform_steps_config_parameters_with_defaults_from_the_batch(synthetic_runs, tmp_path):
    export(synthetic_runs[0], tmp_path / "repo", ExportOptions(**SYNTH))
    _, step = read_config((tmp_path / "repo" / "synth_transform" / "config.pbtxt").read_text())
    _, ensemble = read_config((tmp_path / "repo" / "synth" / "config.pbtxt").read_text())
    parameters = {name: value["string_value"] for name, value in step["parameters"].items()}
    max_events = int(ensemble["parameters"]["max_events"]["string_value"])
    assert parameters == {"max_request_events": str(SYNTH["max_batch_size"] * max_events),
                          "max_id_bytes": str(ExportOptions().max_id_bytes)}
    assert ensemble["parameters"]["max_request_events"]["string_value"] == parameters["max_request_events"]


@pytest.mark.parametrize("sessions, events", [(1, MAX_EVENTS + 1), (3, MAX_EVENTS // 3 + 1)])
def test_a_request_with_more_events_than_the_bound_is_refused_naming_limit_and_count(server, sessions, events):
    message = _refused(server, sessions, events)
    assert "'timestamp'" in message and f"at most {MAX_EVENTS} events per request" in message, message
    assert f"got {sessions} x {events} = {sessions * events}" in message, message


def test_a_request_at_the_bounds_is_answered(server):
    assert _request(server, 1, MAX_EVENTS).shape == (1, 5)
    assert _request(server, 4, MAX_EVENTS // 4, text=b"x" * MAX_ID_BYTES).shape == (4, 5)


def test_a_string_value_longer_than_the_bound_is_refused_naming_the_input(server):
    message = _refused(server, 2, 3, text=b"x" * (MAX_ID_BYTES + 1))
    assert "input 'category'" in message and f"at most {MAX_ID_BYTES} bytes, got {MAX_ID_BYTES + 1}" in message, message
    message = _refused(server, 1, 1, text=b"x" * 1_000_000)
    assert f"got {1_000_000} bytes" in message, message


def test_a_request_of_no_session_is_refused_and_the_server_goes_on(server):
    """Triton's own validation of the ensemble's inputs refuses it before any hf4rec step runs."""
    _refused(server, 0, 3)
