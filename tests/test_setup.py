"""`make setup`: the torch build for the machine (TORCH=cpu|cuda|auto, one version pin), and hf4rec
installed into its venv, so its commands run from any folder."""
from __future__ import annotations

import os
import subprocess

from tests.conftest import PYTHON, ROOT

CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def planned_setup(*variables: str, path: str | None = None) -> subprocess.CompletedProcess:
    """The commands `make setup` would run to install the venv's packages (make -n, nothing run)."""
    env = dict(os.environ, PATH=path or os.environ["PATH"])
    return subprocess.run(["make", "-n", "-B", ".venv/.installed", *variables], cwd=ROOT, capture_output=True, text=True, env=env)


def torch_line(plan: str) -> str:
    lines = [line for line in plan.splitlines() if "grep '^torch==' requirements.txt" in line]
    assert len(lines) == 1, plan
    return lines[0]


def test_setup_installs_the_cpu_torch_build_from_pytorchs_cpu_index_when_asked():
    assert CPU_INDEX in torch_line(planned_setup("TORCH=cpu").stdout)


def test_setup_installs_the_default_index_torch_build_for_cuda():
    assert "--extra-index-url" not in torch_line(planned_setup("TORCH=cuda").stdout)


def test_setup_picks_the_cpu_build_where_no_gpu_is_found(tmp_path):
    # no nvidia-smi on PATH: auto is cpu
    assert CPU_INDEX in torch_line(planned_setup(path=f"{tmp_path}:/usr/bin:/bin").stdout)
    fake = tmp_path / "nvidia-smi"  # a GPU that nvidia-smi lists: auto is cuda
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200'\n")
    fake.chmod(0o755)
    assert "--extra-index-url" not in torch_line(planned_setup(path=f"{tmp_path}:/usr/bin:/bin").stdout)


def test_setup_refuses_an_unknown_torch_build():
    plan = planned_setup("TORCH=rocm")
    assert plan.returncode != 0 and "TORCH: expected cpu, cuda or auto, got rocm" in plan.stderr


def test_the_commands_run_from_outside_the_repository(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    for module in ("training.prepare", "training.train", "export", "serve", "client"):
        done = subprocess.run([PYTHON, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert done.returncode == 0 and "usage:" in done.stdout, (module, done.stderr[-2000:])
    # what the commands import when they run: offline prediction compiles requests with the served transform
    done = subprocess.run([PYTHON, "-c", "import model_repository.transform.compiled, training.data.request_transform"],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
