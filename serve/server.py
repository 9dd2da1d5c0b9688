"""Start the local Triton server on a model repository, wait until it is ready, stop it cleanly.

Tests, the demo and the benchmarks all start Triton through `TritonServer`:

    with TritonServer(repo) as server:
        server.grpc_url  # "127.0.0.1:PORT"

The server binds to loopback unless a host is given, picks free ports, streams its log to a
file, and is killed with its caller (PR_SET_PDEATHSIG) so no orphan keeps ports open. It runs
in a process group of its own with its python-backend stubs: `stop` (also after the server
died) takes the whole group down and removes the stubs' shared-memory regions in /dev/shm.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
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


SHM_DIR = Path("/dev/shm")
STUB_SHM_PREFIX = "triton_python_backend_shm_region_"  # a stub's argv[2]: the region it shares with the server


@dataclass(frozen=True)
class _ProcEntry:
    parent: int
    group: int
    arguments: list[bytes]
    cpu_seconds: float


def _process(proc: Path) -> _ProcEntry | None:
    """A /proc entry; None when it is gone or a zombie (dead, only waiting to be reaped)."""
    try:
        stat = (proc / "stat").read_text()
        arguments = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return _ProcEntry(int(fields[1]), int(fields[2]), arguments,
                      (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))


def _group(group: int) -> dict[int, _ProcEntry]:
    """The live processes of a process group."""
    entries = {int(proc.name): _process(proc) for proc in Path("/proc").iterdir() if proc.name.isdigit()}
    return {pid: entry for pid, entry in entries.items() if entry is not None and entry.group == group}


def _stub_regions(entries) -> set[str]:
    return {entry.arguments[2].decode() for entry in entries
            if len(entry.arguments) > 2 and entry.arguments[2].startswith(STUB_SHM_PREFIX.encode())}


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free ports: all held at once while picked, so none is handed out twice (HTTP and
    gRPC on one port stop tritonserver)."""
    sockets = []
    try:
        for _ in range(n):
            sockets.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sockets[-1].bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


PLATFORM_BACKENDS = {"pytorch_libtorch": "pytorch", "onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt",
                     "tensorflow_savedmodel": "tensorflow", "tensorflow_graphdef": "tensorflow"}  # "ensemble": none
BACKEND_ADVICE = {"pytorch": "re-export with --torch-runtime python (python -m export --run RUN --repo REPO "
                             "--torch-runtime python) for this server, or serve with the NGC image (containers/README.md)"}


def required_backends(model_repository: Path) -> dict[str, str]:
    """{model: the Triton backend its config.pbtxt names (or its platform implies)}; ensembles need none."""
    needed = {}
    for config in sorted(Path(model_repository).glob("*/config.pbtxt")):
        text = config.read_text(errors="replace")
        backend = re.search(r'^\s*backend\s*:\s*"([^"]+)"', text, re.MULTILINE)
        platform = re.search(r'^\s*platform\s*:\s*"([^"]+)"', text, re.MULTILINE)
        name = backend.group(1) if backend else PLATFORM_BACKENDS.get(platform.group(1)) if platform else None
        if name:
            needed[config.parent.name] = name
    return needed


def port_in_use(host: str, port: int) -> bool:
    """Something listens on host:port (binding as a server would, address reuse allowed, fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TritonServerError(RuntimeError):
    pass


LOG_ERROR = re.compile(r"^E\d{4} |already in use|UNAVAILABLE:|[Ee]rror:")  # Triton's error lines (E<mmdd> ...)
HARMLESS = re.compile(r"CUDA|CudaDriverHelper")  # a CPU machine's expected complaints about the missing GPU driver


def log_reason(log: str) -> str:
    """The first error line of a Triton log (the GPU driver's left out), without its prefix (time,
    source file), else its last line."""
    lines = log.splitlines()
    for line in lines:
        if LOG_ERROR.search(line) and not HARMLESS.search(line):
            return re.sub(r"^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ", "", line).strip().strip('"')
    return lines[-1].strip() if lines else "(empty log)"


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
            raise TritonServerError(f"model repository {model_repository}: expected a folder (python -m export --repo), found none")
        self.host = host
        picked = [port for port in free_ports(6, host) if port not in (http_port, grpc_port, metrics_port)]
        self.http_port = http_port or picked[0]
        self.grpc_port = grpc_port or picked[1]
        self.metrics_port = metrics_port or picked[2]
        self.layout = (layout or TritonLayout(TritonLayout.default_home())).require()
        self.check_backends()
        self.log_path = Path(log_path) if log_path else None  # None: a new temporary file at start
        self.ready_timeout_s = ready_timeout_s
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self._log_start = 0  # where this start's lines begin in the log (a log path may be reused)
        self._shm_regions: set[str] = set()  # the stubs' /dev/shm regions, removed on stop

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

    def check_backends(self) -> None:
        """Refuse, before starting, a repository whose models need a backend this server lacks
        (Triton would start, mark them UNAVAILABLE and exit)."""
        have = sorted(path.name for path in self.layout.backend_dir.iterdir() if path.is_dir())
        for model, backend in required_backends(self.model_repository).items():
            if backend not in have:
                advice = BACKEND_ADVICE.get(backend, "serve it on a Triton that has that backend")
                raise TritonServerError(f"model {model} in {self.model_repository} needs Triton's {backend!r} backend; "
                                        f"this server ({self.layout.backend_dir}) has {have}: {advice}")

    def check_ports(self) -> None:
        """Refuse ports another process listens on: Triton would fail to bind one of them and exit, and
        meanwhile a health check could reach the other server."""
        for flag, port in (("--http-port", self.http_port), ("--grpc-port", self.grpc_port), ("--metrics-port", self.metrics_port)):
            if port_in_use(self.host, port):
                raise TritonServerError(f"{flag} {port}: expected a free port on {self.host}, but another process "
                                        f"listens there (another server?): stop it or choose another port")

    def start(self) -> "TritonServer":
        self.check_ports()
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.layout.process_env(),
                preexec_fn=_die_with_parent,
                start_new_session=True,  # its group (pgid = its pid) holds the stubs too, even after it died
            )
        finally:
            log.close()
        try:
            self.wait_ready()
            self._shm_regions |= _stub_regions(_group(self.process.pid).values())
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
                    f"tritonserver exited with code {self.process.returncode} before it was ready: "
                    f"{log_reason(self.own_log())} (log {self.log_path})"
                )
            if self.is_ready() and self._serves_own_ports():
                return
            time.sleep(0.2)
        raise TritonServerError(
            f"tritonserver not ready after {self.ready_timeout_s:.0f} s: {log_reason(self.own_log())} (log {self.log_path})"
        )

    def _serves_own_ports(self) -> bool:
        """The server that answered is this process: it is alive and its log says it bound the HTTP port."""
        return self.process.poll() is None and f"Started HTTPService at {self.host or '0.0.0.0'}:{self.http_port}" in self.own_log()

    def own_log(self) -> str:
        """This start's part of the log."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def processes(self) -> list[ServerProcess]:
        """The running server and the python-backend stubs it started, one per model instance."""
        found = []
        for pid, entry in (_group(self.process.pid) if self.process is not None else {}).items():
            if pid == self.process.pid:
                found.append(ServerProcess(pid, None, entry.cpu_seconds))
            elif entry.parent == self.process.pid and len(entry.arguments) > 1:  # a stub: argv[1] is REPO/MODEL/VERSION/model.py
                found.append(ServerProcess(pid, Path(entry.arguments[1].decode()).parent.parent.name, entry.cpu_seconds))
        return found

    def stop(self, timeout_s: float = 20.0) -> None:
        """Shut tritonserver down (it stops its stubs), then kill what is left of its process group
        (stubs outlive a crashed server: they poll their parent, and a zombie counts as alive)
        and remove the stubs' shared-memory regions."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._kill_group(timeout_s)

    def _kill_group(self, timeout_s: float) -> None:
        group = self.process.pid
        deadline = time.monotonic() + timeout_s
        while left := _group(group):
            self._shm_regions |= _stub_regions(left.values())
            if time.monotonic() > deadline:
                raise TritonServerError(f"processes {sorted(left)} of tritonserver's group {group} outlived SIGKILL")
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        for region in self._shm_regions:
            (SHM_DIR / region).unlink(missing_ok=True)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
