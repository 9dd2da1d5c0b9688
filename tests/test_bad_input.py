"""Every command a user runs answers bad input with one line on stderr, `NAME: ...` naming the
input and what was wrong, exit code 2, no traceback, and writes nothing (training/cli.py)."""
from __future__ import annotations

import subprocess

import pytest

from tests.conftest import PYTHON, ROOT

CONFIG = str(ROOT / "training" / "configs" / "gpt2_clm.yaml")

# (module, arguments, the fragment the one line must hold); DATA, RUN, OUT, EVENTS are filled in
CASES = [
    ("training.prepare", ["--dataset", "ml1m", "--out", "OUT"], "'ml1m'"),
    ("training.prepare", ["--dataset", "ml-1m", "--out", "OUT", "--max-length", "zero"], "--max-length"),
    ("training.prepare", ["--dataset", "missing.parquet", "--out", "OUT"], "missing.parquet"),
    ("training.prepare", ["--dataset", "synthetic", "--out", "OUT", "--long-sequences", "windows"], "--long-sequences"),
    ("training.train", ["--config", CONFIG, "--data", "DATA", "--out", "OUT", "train.epochs=two"], "train.epochs"),
    ("training.train", ["--config", "nope.yaml", "--data", "DATA", "--out", "OUT"], "nope.yaml"),
    ("training.train", ["--config", CONFIG, "--data", "/nonexistent", "--out", "OUT"], "/nonexistent"),
    ("training.train", ["--config", CONFIG, "--data", "DATA", "--out", "OUT", "model.architecture=gpt3"], "gpt3"),
    ("training.train", ["--config", CONFIG, "--data", "DATA"], "--out"),
    ("training.evaluate", ["--run", "RUN", "--split", "tset"], "tset"),
    ("training.evaluate", ["--run", "/nonexistent"], "/nonexistent"),
    ("training.evaluate", ["--run", "RUN", "--protocol", "every"], "every"),
    ("training.predict", ["--run", "RUN", "--events", "missing.csv", "--out", "OUT.csv"], "missing.csv"),
    ("training.predict", ["--run", "RUN", "--events", "EVENTS", "--k", "0", "--out", "OUT.csv"], "--k"),
    ("training.predict", ["--run", "/nonexistent", "--events", "EVENTS", "--out", "OUT.csv"], "/nonexistent"),
    ("training.baselines", ["--data", "DATA", "--baselines", "knn"], "knn"),
    ("training.baselines", ["--data", "DATA", "--split", "tset"], "tset"),
    ("training.incremental", ["--config", CONFIG, "--data", "/nonexistent", "--out", "OUT"], "/nonexistent"),
    ("training.data.datasets.sessions", ["--out", "OUT", "--items", "0"], "--items"),
    ("export", ["--run", "/nonexistent", "--repo", "OUT"], "/nonexistent"),
    ("export", ["--run", "RUN", "--repo", "OUT", "--max-batch-size", "0"], "--max-batch-size"),
    ("export", ["--run", "RUN", "--repo", "OUT", "--torch-runtime", "onnx"], "onnx"),
    ("examples.samples", ["--run", "/nonexistent", "--repo", "OUT", "--out", "OUT"], "/nonexistent"),
    ("serve", ["--repo", "/nonexistent"], "/nonexistent"),
    ("serve", ["--repo", "OUT", "--http-port", "http"], "--http-port"),
    ("examples.demo", ["--run", "/nonexistent", "--repo", "OUT"], "/nonexistent"),
    ("client", ["--input", "missing.csv"], "missing.csv"),
    ("client", ["--input", "EVENTS", "--k", "ten"], "--k"),
]


@pytest.fixture(scope="module")
def places(prepared_synthetic, synthetic_runs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_input")
    events = folder / "events.csv"
    events.write_text("session_id,item_id,timestamp\n1,3,1700000000\n")
    return {"DATA": str(prepared_synthetic), "RUN": str(synthetic_runs[0]), "EVENTS": str(events)}


@pytest.mark.parametrize("module, arguments, fragment", CASES, ids=[f"{m} {' '.join(a[-2:])}" for m, a, _ in CASES])
def test_a_command_answers_bad_input_in_one_line(places, tmp_path, module, arguments, fragment):
    out = tmp_path / "out"
    filled = [places.get(a, str(out) + a[3:] if a.startswith("OUT") else a) for a in arguments]
    answer = subprocess.run([PYTHON, "-m", module, *filled], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    lines = answer.stderr.strip().splitlines()
    name = module.rsplit(".", 1)[-1]
    assert answer.returncode == 2 and len(lines) == 1 and "Traceback" not in answer.stderr, answer.stderr[-3000:]
    assert lines[0].startswith(f"{name}: ") and fragment in lines[0], lines[0]
    assert not list(tmp_path.glob("out*")), "a refused command wrote its output"
