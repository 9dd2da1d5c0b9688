"""The ensemble's names live in model_repository/contract.py alone: no code writes a tensor or step
name of the ensemble as a literal, and what export writes is what the contract names."""
from __future__ import annotations

import ast
from pathlib import Path

from model_repository import contract
from tests.conftest import ROOT

CODE = ("export", "model_repository", "client", "serve", "training", "bench")
TENSORS = {contract.EVENT_COUNT, contract.K, *contract.OUTPUTS, *contract.MODEL_OUTPUTS, *contract.BEST,
           *contract.TOPK_INPUTS, *contract.TOPK_OUTPUTS, contract.SEEN, contract.HISTORY_PREFIX, contract.HISTORY_COUNT}
STEP_SUFFIXES = {f"_{step}" for step in contract.STEPS}
# merlin-systems' own ensemble (the serving benchmark's reference) names its tensors by its conventions
NOT_OURS = ROOT / "bench" / "merlin_reference"
# "hf4rec" is also the project's name: benchmarks label their own side with it
NAME_CHECKED = ("export", "model_repository", "client", "serve", "training")


def literals(path: Path):
    """(line, text) of every string constant in a module but its docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def ensemble_literals(root: Path = ROOT) -> list[str]:
    found = []
    for folder in CODE:
        for path in sorted((root / folder).rglob("*.py")):
            if path == root / "model_repository" / "contract.py":
                continue
            name_checked = folder in NAME_CHECKED
            for line, text in literals(path):
                step_name = any(contract.step_name(contract.DEFAULT_NAME, step) in text for step in contract.STEPS)
                if (text in TENSORS and not path.is_relative_to(NOT_OURS)) or text in STEP_SUFFIXES or step_name \
                        or (name_checked and text == contract.DEFAULT_NAME):
                    found.append(f"{path.relative_to(root)}:{line}: {text!r}")
    return found


def test_no_tensor_or_step_name_of_the_ensemble_is_a_literal_outside_the_contract():
    assert ensemble_literals() == []


def test_the_scan_finds_a_literal_name(tmp_path):
    """The scan above fails on a name written out: a tensor, a step suffix, the default name."""
    for folder in CODE:
        (tmp_path / folder).mkdir()
    (tmp_path / "client" / "bad.py").write_text('"""A docstring may say event_count."""\nINPUT = "event_count"\n')
    (tmp_path / "export" / "bad.py").write_text('def step(name):\n    return f"{name}_topk"\n')
    (tmp_path / "serve" / "bad.py").write_text('MODEL = "hf4rec"\n')
    (tmp_path / "bench" / "label.py").write_text('LIBRARY = "hf4rec"\n')
    assert ensemble_literals(tmp_path) == ["export/bad.py:2: '_topk'", "client/bad.py:2: 'event_count'",
                                           "serve/bad.py:1: 'hf4rec'"]


def test_the_parameters_a_client_reads_are_the_ones_export_writes():
    parameters = contract.EnsembleParameters(
        sequence_key="session_id", time_column="timestamp", item_column="item_id", context_columns=("device", "country"),
        max_events=20, max_k=100, exclude_seen=True, max_request_events=1280)
    written = parameters.to_config()
    assert list(written) == list(contract.PARAMETERS)
    assert written["context_columns"] == "device,country" and written["exclude_seen"] == "true"
    assert contract.EnsembleParameters(**contract.EnsembleParameters.config_values(written, history=False)) == parameters
    aware = contract.EnsembleParameters(**{**parameters.__dict__, "user_column": "user_id", "session_gap_s": 1800,
                                           "history_events": 50})
    assert list(aware.to_config()) == [*contract.PARAMETERS, *contract.HISTORY_PARAMETERS]
    assert contract.EnsembleParameters(**contract.EnsembleParameters.config_values(aware.to_config(), history=True)) == aware
