"""merlin-systems' own packaging of a run: the reference the serving benchmark measures.

    Ensemble(workflow.input_schema columns >> TransformWorkflow(workflow) >> PredictPyTorch(model.pt))
        .export(repo)

merlin-systems 23.8 writes `executor_model` (python backend, platform merlin_executor), which
runs the graph and calls each step by BLS: `0_transformworkflowtriton` (merlin's
workflow_model on the run's fitted workflow) and `1_predictpytorchtriton`. The only change
made here: the PyTorch step, exported for the libtorch backend (absent on this machine), is
switched to the python backend running the same model.pt through `runner_model.py`.

    PYTHONPATH=. .venv/bin/python -m bench.merlin_reference.build RUN MODEL_PT REPO MAX_K
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from training.data import prepared
from training import run_dir as runs

EXECUTOR = "executor_model"  # merlin-systems' default name for the entry point
OUTPUTS = ("item_codes", "item_scores")  # the ensemble's outputs: model.pt's best codes and scores [B, max_k]
RUNNER_SOURCE = Path(__file__).with_name("runner_model.py")
_TRITON_DTYPES = {"TYPE_STRING": "BYTES"}  # config names -> the names clients and perf_analyzer use


class MerlinReferenceError(ValueError):
    pass


def model_arguments(model) -> list[str]:
    """The forward's argument names of a TorchScript module: the prepared columns it reads, in order."""
    return [argument.name for argument in model.forward.schema.arguments[1:]]


def _switch_to_python_runner(step: Path, model_pt: Path) -> None:
    """libtorch config -> python backend; the given model.pt file, runner_model.py as model.py."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((step / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    config.backend = "python"
    config.platform = ""
    del config.parameters["INFERENCE_MODE"]  # a libtorch setting
    (step / "config.pbtxt").write_text(text_format.MessageToString(config))
    versions = [p for p in step.iterdir() if p.is_dir() and p.name.isdigit()]
    for version in versions:
        shutil.copyfile(model_pt, version / "model.pt")  # the file itself, not merlin's re-save
        shutil.copyfile(RUNNER_SOURCE, version / "model.py")


def build_repository(run_dir: Path, model_pt: Path, repo: Path, max_k: int) -> dict:
    """Export merlin-systems' ensemble for the run's fitted workflow and model.pt (which returns
    its `max_k` best item codes and their scores) into `repo` (a new or empty folder). Returns
    what a request needs: {"model_name", "inputs" (name -> Triton dtype, e.g. BYTES / INT64),
    "outputs", "sequence_key", "catalog"}."""
    import nvtabular as nvt
    import torch
    from merlin.schema import ColumnSchema, Schema
    from merlin.systems.dag import Ensemble
    from merlin.systems.dag.ops.pytorch import PredictPyTorch
    from merlin.systems.dag.ops.workflow import TransformWorkflow

    run_dir, model_pt, repo = Path(run_dir), Path(model_pt), Path(repo)
    data = run_dir / runs.DATA
    summary = prepared.load_summary(data)
    if repo.exists() and any(repo.iterdir()):
        raise MerlinReferenceError(f"model repository {repo}: expected a new or empty folder, it holds files")
    workflow = nvt.Workflow.load(str(data / prepared.WORKFLOW_DIR))

    # a TorchScript module, not the path: merlin's PredictPyTorch torch.load()s a path, which
    # torch >= 2.6 refuses for TorchScript archives (weights_only)
    model = torch.jit.load(str(model_pt), map_location="cpu")
    arguments = model_arguments(model)
    produced = workflow.output_schema.column_names
    unknown = [name for name in arguments if name not in produced]
    if unknown:
        raise MerlinReferenceError(f"{model_pt} reads {unknown}; the workflow of {run_dir} produces {produced}")
    model_inputs = workflow.output_schema.select_by_name(arguments)
    best = Schema([ColumnSchema(OUTPUTS[0], dtype="int64", dims=(None, max_k)),
                   ColumnSchema(OUTPUTS[1], dtype="float32", dims=(None, max_k))])

    graph = (workflow.input_schema.column_names
             >> TransformWorkflow(workflow)
             >> PredictPyTorch(model, model_inputs, best))
    executor_config, step_configs = Ensemble(graph, workflow.input_schema).export(str(repo), name=EXECUTOR)
    pytorch_steps = [c.name for c in step_configs if c.platform == "pytorch_libtorch"]
    if len(pytorch_steps) != 1:
        raise MerlinReferenceError(f"expected one PyTorch step in merlin's export, got {pytorch_steps}")
    _switch_to_python_runner(repo / pytorch_steps[0], model_pt)

    from tritonclient.grpc import model_config_pb2

    def dtype(value) -> str:
        name = model_config_pb2.DataType.Name(value)
        return _TRITON_DTYPES.get(name, name.removeprefix("TYPE_"))

    return {
        "model_name": executor_config.name,
        "inputs": {tensor.name: dtype(tensor.data_type) for tensor in executor_config.input},
        "outputs": list(OUTPUTS),
        "sequence_key": summary["sequence_key"],
        "catalog": summary["item_cardinality"],
    }


if __name__ == "__main__":
    print(json.dumps(build_repository(*map(Path, sys.argv[1:4]), int(sys.argv[4])), indent=1))
