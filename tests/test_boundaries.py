"""Stage boundaries that keep the pieces installable on their own."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from tests.conftest import PYTHON, ROOT

HEAVY = ("torch", "nvtabular", "merlin", "transformers", "dask", "training", "export")


def test_client_imports_nothing_heavy():
    script = f"import sys, client\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_serve_launcher_imports_nothing_heavy():
    """serve/ is the local launcher only: starting a server loads no model, workflow or training code
    (the command-line conventions of training.cli aside)."""
    script = ("import sys, serve.server, serve.install, serve.__main__\n"
              f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r} and m not in ('training', 'training.cli')])")
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def imported_modules(path: Path) -> set[str]:
    """Every dotted name a file imports, at its top or inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # a module's name, or a module's
    return found


# stage -> the project's packages its code may import (beyond its own)
ALLOWED = {
    "client": {"model_repository.contract"},  # installs alone: tritonclient, numpy, pandas/pyarrow
    "serve": {"training.cli"},
    "model_repository": set(),  # runs inside Triton with only its version folder (contract.py: plain constants)
}
PROJECT = ("training", "export", "client", "serve", "model_repository", "bench", "examples")


def stage_imports(root: Path = ROOT) -> list[str]:
    found = []
    for stage, allowed in ALLOWED.items():
        for path in sorted((root / stage).rglob("*.py")):
            for module in imported_modules(path):
                top = module.split(".")[0]
                if top in PROJECT and top != stage and not any(module == ok or module.startswith(ok + ".") for ok in allowed):
                    found.append(f"{path.relative_to(root)} imports {module}")
    return found


def test_client_serve_and_model_repository_import_no_other_stage():
    assert stage_imports() == []


def test_the_import_scan_finds_a_stage_reaching_into_another(tmp_path):
    for stage in ALLOWED:
        (tmp_path / stage).mkdir()
    (tmp_path / "serve" / "demo.py").write_text("def main():\n    from training.held_out import held_out_sequences\n")
    (tmp_path / "client" / "ok.py").write_text("from model_repository.contract import K\nimport numpy\n")
    assert stage_imports(tmp_path) == ["serve/demo.py imports training.held_out.held_out_sequences"]


# importing NVTabular or Merlin fails in the process this runs: a stage that needs them stops there
NO_MERLIN = """
import runpy, sys
class NoMerlin:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nvtabular", "merlin"):
            raise ImportError(f"{name} is blocked: this stage must run without NVTabular and Merlin")
sys.meta_path.insert(0, NoMerlin())
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def test_blocking_merlin_stops_a_stage_that_imports_it(tmp_path):
    result = subprocess.run([PYTHON, "-c", NO_MERLIN, "training.data.workflow"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "is blocked" in result.stderr, result.stderr[-2000:]


def test_evaluation_and_export_run_without_merlin(synthetic_runs, tmp_path):
    """A run carries what loading it needs (config, features.json, weights, transform.json): evaluating
    and exporting it import neither NVTabular nor Merlin (a GPU box may have neither)."""
    run = synthetic_runs[0]
    evaluated = subprocess.run([PYTHON, "-c", NO_MERLIN, "training.evaluate", "--run", str(run), "--split", "test"],
                               cwd=ROOT, capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert '"ndcg@10"' in evaluated.stdout
    exported = subprocess.run([PYTHON, "-c", NO_MERLIN, "export", "--run", str(run), "--repo", str(tmp_path / "repo")],
                              cwd=ROOT, capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "repo" / "hf4rec" / "config.pbtxt").is_file()


def test_a_run_loads_its_feature_spec_from_features_json(synthetic_runs, tmp_path):
    """Loading a run reads the spec it trained with from features.json, not the prepared schema or summary."""
    import json
    import shutil

    from training import run_dir
    from training.data.codes import SPECIAL_CODES
    from training.model.features import FeatureSpec

    run = tmp_path / "run"
    shutil.copytree(synthetic_runs[0], run)
    (run / run_dir.DATA / "prepared.json").unlink()
    shutil.rmtree(run / run_dir.DATA / "train")
    written = json.loads((run / run_dir.FEATURES).read_text())
    model, _ = run_dir.load_model(run)
    assert model.spec == FeatureSpec.from_dict(written["spec"]) and model.spec.categorical
    assert written["special_codes"] == SPECIAL_CODES
