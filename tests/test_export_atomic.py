"""An export publishes its four models as one unit: the ensemble pins the step versions exported
with it and is published last, so an export that dies while publishing leaves the previous
ensemble served with its own steps; exports to one repository take turns (a lock) and never
pick the same version."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import export.repository as repository
from client.recommender import RecommenderClient
from export.configs import read_config
from export.repository import PAUSE_ENV, ExportError, ExportOptions, export
from serve.server import TritonServer
from tests.conftest import PYTHON, ROOT
from training.data.datasets import synthetic
from training.data.events import validate_events
from training.recommend import recommend
from training.data.views import held_out

SYNTH = dict(name="synth", torch_runtime="python", max_batch_size=16, top_k=20)
STEPS = ("synth_transform", "synth_model", "synth_topk")


def _pinned(repo: Path) -> dict[str, int]:
    _, config = read_config((repo / "synth" / "config.pbtxt").read_text())
    return {step["model_name"]: int(step["model_version"]) for step in config["ensemble_scheduling"]["step"]}


def _versions(repo: Path, model: str) -> list[int]:
    return sorted(int(p.name) for p in (repo / model).iterdir() if p.is_dir())


def test_the_ensemble_pins_the_step_versions_exported_with_it(synthetic_runs, tmp_path):
    repo = tmp_path / "repo"
    for version in (1, 2):
        assert export(synthetic_runs[0], repo, ExportOptions(**SYNTH))["version"] == version
        assert _pinned(repo) == dict.fromkeys(STEPS, version)
    with pytest.raises(ExportError, match="--version 1: already in .* below its highest version 2"):
        export(synthetic_runs[0], repo, ExportOptions(**SYNTH, version=1))


def test_two_concurrent_exports_take_distinct_versions_and_leave_a_valid_repository(synthetic_runs, tmp_path):
    """Each export pauses between staging and publishing: without the lock both would pick version 1."""
    repo = tmp_path / "repo"
    command = [PYTHON, "-m", "export", "--repo", str(repo), "--name", "synth", "--torch-runtime", "python",
               "--max-batch-size", "16", "--top-k", "20"]
    exports = [subprocess.Popen([*command, "--run", str(run)], cwd=ROOT, env={**os.environ, PAUSE_ENV: "5"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for run in synthetic_runs]
    results = [process.communicate(timeout=300) for process in exports]
    assert [process.returncode for process in exports] == [0, 0], [err[-2000:] for _, err in results]
    versions = sorted(int(re.search(r"as version (\d+)", out).group(1)) for out, _ in results)
    assert versions == [1, 2]
    for model in ("synth", *STEPS):
        assert _versions(repo, model) == [1, 2], model
    assert _pinned(repo) == dict.fromkeys(STEPS, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".repo.lock", "repo"], "a staging folder was left behind"


@pytest.mark.parametrize("crash_at", ["the ensemble's version folder", "the ensemble's config"])
def test_an_export_dying_while_publishing_leaves_the_previous_ensemble_served_with_its_own_steps(
        synthetic_runs, tmp_path, monkeypatch, crash_at):
    repo = tmp_path / "repo"
    export(synthetic_runs[0], repo, ExportOptions(**SYNTH))
    rename, replace = os.rename, os.replace

    def crashing(real):
        def move(source, target):
            target = Path(target)
            if target.parent == repo / "synth" and (target.name == "config.pbtxt") == (crash_at == "the ensemble's config"):
                raise OSError(f"crash injected at {crash_at}")
            return real(source, target)
        return move

    monkeypatch.setattr(repository.os, "rename", crashing(rename))
    monkeypatch.setattr(repository.os, "replace", crashing(replace))
    with pytest.raises(OSError, match="crash injected"):
        export(synthetic_runs[1], repo, ExportOptions(**SYNTH))
    monkeypatch.undo()
    for step in STEPS:
        assert _versions(repo, step) == [1, 2], "the steps of the dying export were published before the ensemble"

    events = validate_events(synthetic.generate_events(synthetic.SyntheticConfig(n_events=3_000, seed=12)),
                             synthetic.COLUMNS, "synthetic")
    sessions, _ = held_out(events, "session_id", "timestamp", 20, seed=0)
    first, second = (recommend(run, sessions, 5, exclude_seen=False) for run in synthetic_runs)
    assert first != second, "the two runs must answer differently for the test to tell their steps apart"
    with TritonServer(repo, log_path=tmp_path / "server.log") as server:
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        assert all(triton.is_model_ready(step, version) for step in STEPS for version in ("1", "2"))
        with RecommenderClient(server.grpc_url, model="synth") as client:
            answers = client.recommend(sessions, k=5)
    assert {s: a.item_ids for s, a in answers.items()} == {s: ids for s, (ids, _) in first.items()}
