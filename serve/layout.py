"""Where the unpacked Triton lives (`.triton/`) and the environment its processes need."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TritonLayout:
    home: Path

    @staticmethod
    def default_home() -> Path:
        return Path(os.environ.get("HF4REC_TRITON_HOME", PROJECT_ROOT / ".triton"))

    @property
    def tritonserver(self) -> Path:
        return self.home / "bin" / "tritonserver"

    @property
    def perf_analyzer(self) -> Path:
        return self.home / "bin" / "perf_analyzer"

    @property
    def backend_dir(self) -> Path:
        return self.home / "backends"

    @property
    def cache_dir(self) -> Path:
        return self.home / "caches"

    @property
    def lib_dir(self) -> Path:
        return self.home / "lib"

    def is_installed(self, python_version: str) -> bool:
        marker = self.home / "installed.json"
        if not (marker.exists() and self.tritonserver.exists()):
            return False
        return json.loads(marker.read_text()).get("python") == python_version

    def require(self) -> "TritonLayout":
        if not self.tritonserver.exists():
            raise FileNotFoundError(
                f"no Triton server at {self.tritonserver}: run `make setup` (or `python -m serve.install`)"
            )
        return self

    def process_env(self) -> dict[str, str]:
        """Environment for tritonserver and perf_analyzer: the wheel's libraries, the venv's
        libpython for the python-backend stub, and the venv first on PATH so python models
        import the venv's packages."""
        env = dict(os.environ)
        info = json.loads((self.home / "installed.json").read_text())
        libs = [str(self.lib_dir), info["python_libdir"], env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env
