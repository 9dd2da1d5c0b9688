"""After tritonserver crashes, closing its launcher leaves none of what it started: no
python-backend stub of that server runs on and their /dev/shm regions are gone."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from serve.server import SHM_DIR, STUB_SHM_PREFIX, TritonServer
from tests.conftest import ROOT

REPO = ROOT / "tests" / "triton_repo"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_crashed_server_leaves_no_stub_and_no_shared_memory_after_stop(tmp_path):
    with TritonServer(REPO, log_path=tmp_path / "server.log") as server:
        stubs = [process.pid for process in server.processes() if process.model is not None]
        regions = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[2].decode() for pid in stubs]
        assert len(stubs) == 2 and all(r.startswith(STUB_SHM_PREFIX) and (SHM_DIR / r).exists() for r in regions)
        os.kill(server.process.pid, signal.SIGKILL)  # a crash: tritonserver stops none of its stubs
    assert [pid for pid in stubs if _running(pid)] == [], "stubs of the crashed server outlived its launcher"
    assert [r for r in regions if (SHM_DIR / r).exists()] == [], "the stubs' shared memory outlived the launcher"
