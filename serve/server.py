"""Start the local Triton server on a model repository, wait until it is ready, stop it cleanly.

Tests, the demo and the benchmarks all start Triton through `TritonServer`:

    with TritonServer(repo) as server:
        server.grpc_url  # "127.0.0.1:PORT"

The server binds to loopback unless a host is given, picks free ports, streams its log to a
file, and is killed with its caller (PR_SET_PDEATHSIG) so no orphan keeps ports open.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from serve.layout import TritonLayout

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ServerProcess:
    pid: int
    model: str | None  # the model a python-backend stub serves; None: tritonserver itself
    cpu_seconds: float  # user + system so far


def _process(proc: Path) -> tuple[int, list[bytes], float] | None:
    """(parent pid, argv, CPU seconds) of a /proc entry; None when it is gone."""
    try:
        stat = (proc / "stat").read_text()
        arguments = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[1]), arguments, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TritonServerError(RuntimeError):
    pass


class TritonServer:
    def __init__(
        self,
        model_repository: str | Path,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: str | Path | None = None,
        layout: TritonLayout | None = None,
        ready_timeout_s: float = 120.0,
        extra_args: tuple[str, ...] = (),
    ):
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository {self.model_repository} is not a folder")
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.layout = (layout or TritonLayout(TritonLayout.default_home())).require()
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self.ready_timeout_s = ready_timeout_s
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def command(self) -> list[str]:
        return [
            str(self.layout.tritonserver),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.layout.backend_dir}",
            f"--cache-directory={self.layout.cache_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-cpu-metrics=false",
            "--allow-gpu-metrics=false",
            *self.extra_args,
        ]

    def start(self) -> "TritonServer":
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.layout.process_env(),
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TritonServerError(
                    f"tritonserver exited with code {self.process.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        raise TritonServerError(
            f"tritonserver not ready after {self.ready_timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def processes(self) -> list[ServerProcess]:
        """The running server and the python-backend stubs it started, one per model instance."""
        found = []
        for proc in Path("/proc").iterdir():
            entry = _process(proc) if proc.name.isdigit() else None
            if entry is None or self.process is None:
                continue
            parent, arguments, seconds = entry
            if int(proc.name) == self.process.pid:
                found.append(ServerProcess(int(proc.name), None, seconds))
            elif parent == self.process.pid and len(arguments) > 1:  # a stub: argv[1] is REPO/MODEL/VERSION/model.py
                found.append(ServerProcess(int(proc.name), Path(arguments[1].decode()).parent.parent.name, seconds))
        return found

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
