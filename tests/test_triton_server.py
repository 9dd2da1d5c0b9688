"""The real Triton 2.51 server from .triton/, started by the project's launcher, answers a
python-backend model and a native ensemble over gRPC and HTTP, survives a bad request,
binds to loopback, and goes away with its caller."""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from serve.server import TritonServer
from tests.conftest import PYTHON, ROOT

REPO = ROOT / "tests" / "triton_repo"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("triton") / "server.log"
    with TritonServer(REPO, log_path=log) as running:
        yield running
    assert running.process.poll() is not None, "server still running after the context closed"


def _infer(client_module, client, model, input_name, output_name, values):
    tensor = client_module.InferInput(input_name, list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    result = client.infer(model, [tensor], outputs=[client_module.InferRequestedOutput(output_name)])
    return result.as_numpy(output_name)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_python_model_and_native_ensemble_answer(server, protocol):
    module = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(server.grpc_url if protocol == "grpc" else server.http_url)
    assert client.is_server_ready()
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_infer(module, client, "double", "INPUT", "OUTPUT", values), values * 2)
    np.testing.assert_array_equal(
        _infer(module, client, "double_then_add_one", "VALUES", "RESULT", values), values * 2 + 1
    )
    config = client.get_model_config("double_then_add_one")
    platform = config.config.platform if protocol == "grpc" else config["platform"]
    assert platform == "ensemble"


def test_bad_request_is_rejected_and_server_keeps_serving(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    wrong = grpcclient.InferInput("VALUES", [1, 3], "INT64")
    wrong.set_data_from_numpy(np.ones((1, 3), dtype=np.int64))
    with pytest.raises(InferenceServerException, match="(?i)data.type|datatype|INT64"):
        client.infer("double_then_add_one", [wrong])
    values = np.ones((1, 3), dtype=np.float32)
    np.testing.assert_array_equal(_infer(grpcclient, client, "double_then_add_one", "VALUES", "RESULT", values), values * 3)


def test_server_binds_loopback_and_logs_to_file(server):
    command = " ".join(server.command())
    assert "--grpc-address=127.0.0.1" in command and "--http-address=127.0.0.1" in command
    assert "successfully loaded 'double_then_add_one'" in server.log_path.read_text()


def test_server_dies_with_its_caller(tmp_path):
    """A caller killed with SIGKILL (no cleanup runs) still takes its server down."""
    pid_file = tmp_path / "server.pid"
    script = textwrap.dedent(
        f"""
        import time
        from serve.server import TritonServer
        server = TritonServer({str(REPO)!r}, log_path={str(tmp_path / 'log')!r}).start()
        open({str(pid_file)!r}, "w").write(str(server.process.pid))
        time.sleep(600)
        """
    )
    caller = subprocess.Popen([PYTHON, "-c", script], cwd=ROOT)
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert caller.poll() is None, "caller exited before its server was ready"
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.2)
    server_pid = int(pid_file.read_text())
    os.kill(caller.pid, signal.SIGKILL)
    caller.wait()
    deadline = time.monotonic() + 30
    while _alive(server_pid):
        assert time.monotonic() < deadline, f"tritonserver {server_pid} outlived its killed caller"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_perf_analyzer_from_setup_measures_the_server(server, tmp_path):
    """perf_analyzer 2.51 (unpacked by setup, with its library links) drives the real server;
    the benchmarks rely on it. Nothing here judges the speed."""
    report = tmp_path / "perf.csv"
    result = subprocess.run(
        [str(server.layout.perf_analyzer), "-m", "double_then_add_one", "-u", server.grpc_url, "-i", "grpc",
         "--shape", "VALUES:3", "--concurrency-range", "1", "--measurement-mode", "count_windows",
         "--measurement-request-count", "30", "-s", "100", "--max-trials", "3", "-f", str(report),
         # windows always "stable": on 2 busy shared cores they may differ by more than 10%, which is no fault here
         "--stability-percentage", "1000"],
        env=server.layout.process_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    header, row = report.read_text().strip().splitlines()[:2]
    measured = dict(zip(header.split(","), row.split(",")))
    assert measured["Concurrency"] == "1" and float(measured["Inferences/Second"]) > 0


def test_serve_command_runs_until_terminated(tmp_path):
    from serve.server import free_port

    ports = [str(free_port()) for _ in range(3)]
    command = [PYTHON, "-m", "serve", "--repo", str(REPO), "--http-port", ports[0], "--grpc-port", ports[1],
               "--metrics-port", ports[2], "--log", str(tmp_path / "serve.log")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert f"gRPC 127.0.0.1:{ports[1]}" in line, line
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        assert client.is_model_ready("double_then_add_one")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert not TritonServer(REPO, http_port=int(ports[0])).is_ready()


def _one_line_refusal(done: subprocess.CompletedProcess, name: str, *fragments: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"{name}: "), done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_a_second_server_on_busy_ports_is_refused_in_one_line(server, tmp_path):
    command = [PYTHON, "-m", "serve", "--repo", str(REPO), "--http-port", str(server.http_port),
               "--grpc-port", str(server.grpc_port), "--metrics-port", str(server.metrics_port), "--log", str(tmp_path / "log")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    _one_line_refusal(done, "serve", f"--http-port {server.http_port}", "another process listens")
    assert "Triton ready" not in done.stdout


def test_a_repository_needing_a_backend_the_server_lacks_is_refused_before_it_starts(tmp_path):
    model = tmp_path / "repo" / "hf4rec_model"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text((REPO / "add_one" / "config.pbtxt").read_text().replace('"python"', '"pytorch"'))
    done = subprocess.run([PYTHON, "-m", "serve", "--repo", str(model.parent), "--log", str(tmp_path / "log")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    _one_line_refusal(done, "serve", "hf4rec_model", "'pytorch' backend", "--torch-runtime python")
    assert not (tmp_path / "log").exists(), "the server was started"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_client_names_a_model_the_server_does_not_have(server, tmp_path, protocol):
    events = tmp_path / "events.csv"
    events.write_text("session_id,item_id,timestamp\n1,3,1700000000\n")
    url = server.grpc_url if protocol == "grpc" else server.http_url
    done = subprocess.run([PYTHON, "-m", "client", "--url", url, "--protocol", protocol, "--model", "hf4rek",
                           "--input", str(events), "--wait-s", "300"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    _one_line_refusal(done, "client", "'hf4rek': no such model", "'double_then_add_one'")


def test_the_client_fails_at_once_where_nothing_listens(tmp_path):
    from serve.server import free_port

    events = tmp_path / "events.csv"
    events.write_text("session_id,item_id,timestamp\n1,3,1700000000\n")
    address = f"127.0.0.1:{free_port()}"  # a port nobody listens on; it would wait 300 s for a server that is starting
    done = subprocess.run([PYTHON, "-m", "client", "--url", address, "--input", str(events), "--wait-s", "300"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    _one_line_refusal(done, "client", f"nothing listens at {address}")
