"""config.pbtxt of the four models (transform, model, top-k, the ensemble), as text.

The ensemble reads as the data path: raw events -> NAME_transform -> NAME_model ->
NAME_topk. The model step's two variants (libtorch or the python runner) share every line
but `backend` and INTER_OP_THREAD_COUNT, which only the runner carries (model_parameters).
"""
from __future__ import annotations

from dataclasses import dataclass

WIRE = {"string": "TYPE_STRING", "int64": "TYPE_INT64", "float64": "TYPE_FP64", "float32": "TYPE_FP32", "int32": "TYPE_INT32"}
BACKENDS = {"libtorch": "pytorch", "python": "python"}
KEEP_VERSIONS = 2  # the previous export stays loaded beside the new one


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # a WIRE key
    dims: tuple[int, ...]
    ragged: bool = False  # requests of different shapes may share a dynamic batch (python steps only)

    def text(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        ragged = " allow_ragged_batch: true" if self.ragged else ""
        return f'  {{ name: "{self.name}" data_type: {WIRE[self.dtype]} dims: [ {dims} ]{ragged} }}'


def _tensors(kind: str, tensors: list[Tensor]) -> str:
    return f"{kind} [\n" + ",\n".join(t.text() for t in tensors) + "\n]\n"


def _parameters(values: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in values.items())


def step_config(name: str, backend: str, max_batch_size: int, inputs: list[Tensor], outputs: list[Tensor],
                kind: str = "KIND_CPU", parameters: dict[str, str] | None = None, count: int = 1) -> str:
    return (
        f'name: "{name}"\n'
        f'backend: "{backend}"\n'
        f"max_batch_size: {max_batch_size}\n"
        "dynamic_batching { }\n"
        + _tensors("input", inputs)
        + _tensors("output", outputs)
        + f"instance_group [ {{ count: {count} kind: {kind} }} ]\n"
        + f"version_policy: {{ latest: {{ num_versions: {KEEP_VERSIONS} }} }}\n"
        + _parameters(parameters or {})
    )


def model_parameters(backend: str, threads: int = 1) -> dict[str, str]:
    """The libtorch backend's knobs, which the python runner honours too. Under libtorch the thread
    counts are the server process's: r24.10 sets inter-op threads on every model load and torch
    allows that once per process, so a second model or version would abort the server: left out."""
    parameters = {"INFERENCE_MODE": "true", "INTRA_OP_THREAD_COUNT": str(threads)}
    if backend != BACKENDS["libtorch"]:  # the runner's threads are its own stub process's
        parameters["INTER_OP_THREAD_COUNT"] = str(threads)
    return parameters


@dataclass(frozen=True)
class Step:
    model: str
    inputs: dict[str, str]  # the step's input -> the ensemble tensor
    outputs: dict[str, str]  # the step's output -> the ensemble tensor


def ensemble_config(name: str, max_batch_size: int, step_version: int, inputs: list[Tensor], outputs: list[Tensor],
                    steps: list[Step], parameters: dict[str, str]) -> str:
    """`step_version`: the version of every step this ensemble runs (exported with it), never "latest"."""
    def maps(kind: str, mapping: dict[str, str]) -> str:
        return "".join(f'      {kind} {{ key: "{k}" value: "{v}" }}\n' for k, v in mapping.items())

    scheduling = "".join(
        "    {\n"
        f'      model_name: "{step.model}"\n'
        f"      model_version: {step_version}\n"
        + maps("input_map", step.inputs)
        + maps("output_map", step.outputs)
        + "    }"
        + (",\n" if index < len(steps) - 1 else "\n")
        for index, step in enumerate(steps)
    )
    return (
        f'name: "{name}"\n'
        'platform: "ensemble"\n'
        f"max_batch_size: {max_batch_size}\n"
        + _tensors("input", inputs)
        + _tensors("output", outputs)
        + "ensemble_scheduling {\n  step [\n" + scheduling + "  ]\n}\n"
        + _parameters(parameters)
    )


def read_config(text: str) -> tuple[dict, dict]:
    """A config.pbtxt -> (metadata-like {"inputs": [{name, datatype}]}, the config as a dict),
    the two dicts `client.sessions.RequestSpec.from_server` reads from a server."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = json_format.MessageToDict(text_format.Parse(text, model_config_pb2.ModelConfig()),
                                       preserving_proto_field_name=True)
    inputs = [{"name": tensor["name"], "datatype": tensor["data_type"]} for tensor in config["input"]]
    return {"inputs": inputs}, config
