"""Export, evaluation and offline recommendation read what prepare wrote as plain data
(transform.json, prepared.json's feature roles, the category parquet files), never the
pickled workflow: a run folder whose workflow.pkl runs code when unpickled is evaluated,
recommended from and exported without running it, without importing Merlin, and the
served repository holds no pickle. The plain transform is the saved workflow's."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import textwrap
from pathlib import Path

from tests.conftest import PYTHON, ROOT
from training.data import prepared, request_transform
from training import run_dir
from training.data.datasets import synthetic
from training.data.events import validate_events
from training.model.features import feature_spec
from training.data.views import held_out


class _WritesMarker:
    """Unpickling this creates the marker file: what a hostile workflow.pkl could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _with_hostile_workflow(run: Path, data: Path, folder: Path, marker: Path) -> Path:
    """Copies of a run and its prepared folder whose workflow.pkl writes `marker` when loaded."""
    shutil.copytree(data, folder / "data")
    shutil.copytree(run, folder / "run")
    (folder / "run" / run_dir.RUN).write_text(json.dumps({"data_dir": str(folder / "data")}))
    hostile = pickle.dumps(_WritesMarker(marker))
    for copy in (folder / "data", folder / "run" / run_dir.DATA):
        (copy / prepared.WORKFLOW_DIR / "workflow.pkl").write_bytes(hostile)
    pickle.loads(hostile)  # the payload works: it writes the marker when unpickled
    assert marker.exists()
    marker.unlink()
    return folder / "run"


def test_a_hostile_workflow_pickle_is_never_loaded_by_evaluate_recommend_or_export(synthetic_runs, prepared_synthetic, tmp_path):
    marker = tmp_path / "unpickled"
    run = _with_hostile_workflow(synthetic_runs[0], prepared_synthetic, tmp_path, marker)
    events = validate_events(synthetic.generate_events(synthetic.SyntheticConfig(n_events=3_000, seed=12)),
                             synthetic.COLUMNS, "synthetic")
    held_out(events, "session_id", "timestamp", 20, seed=0)[0].to_parquet(tmp_path / "sessions.parquet")
    script = textwrap.dedent(f"""
        import json, sys
        from export.repository import ExportOptions, export
        from training import evaluate
        from training.data.parquet import read_parquet
        from training.recommend import recommend

        evaluate.main(["--run", {str(run)!r}, "--split", "test"])
        answers = recommend({str(run)!r}, read_parquet({str(tmp_path / 'sessions.parquet')!r}), 5, exclude_seen=False)
        export({str(run)!r}, {str(tmp_path / 'repo')!r}, ExportOptions(name="synth", torch_runtime="python"))
        print(json.dumps({{"sessions": len(answers),
                          "merlin": sorted(m for m in sys.modules if m.split(".")[0] in ("merlin", "nvtabular"))}}))
    """)
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert not marker.exists(), f"a stage unpickled the run's workflow.pkl: {result.stderr[-1500:]}"
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"sessions": 20, "merlin": []}
    assert '"ndcg@10"' in result.stdout  # evaluate printed its metrics
    assert (tmp_path / "repo" / "synth" / "1").is_dir() and not list((tmp_path / "repo").rglob("*.pkl"))


def test_the_plain_transform_is_the_saved_workflow_compiled(prepared_synthetic):
    import nvtabular as nvt

    workflow = nvt.Workflow.load(str(prepared_synthetic / prepared.WORKFLOW_DIR))
    spec = feature_spec(prepared_synthetic)
    written = request_transform.load(prepared_synthetic)
    assert written == request_transform.compile_workflow(
        workflow, prepared_synthetic / prepared.WORKFLOW_DIR / "categories", {*spec.continuous, *spec.context_continuous})
    assert {output["name"] for output in written["outputs"]} >= {*spec.list_columns, *spec.context_columns}
    steps = {output["name"]: [step["op"] for step in output["steps"]] for output in written["outputs"]}
    assert steps["price_list"] == ["fill", "log1p", "normalize"] and steps["item_id_list"] == ["categorify"]
