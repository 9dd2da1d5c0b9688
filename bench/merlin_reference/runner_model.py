"""merlin-systems' PyTorch step as a python-backend model (copied to <step>/1/model.py by
build.py): runs model.pt with one torch thread, since no libtorch backend exists here.

merlin's workflow step hands each list column over ragged, as `<col>__values` +
`<col>__offsets` (int32, B + 1 entries); model.pt takes lists dense, right-padded with 0
([B, L]), and context columns as [B, 1]. This file does that adaptation and nothing else.
The forward's argument names say which inputs model.pt reads, in which order.
"""
import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

# on 2 cores, torch's thread pools fight the other python stubs (see ENVIRONMENT.md)
torch.set_num_threads(1)
torch.set_num_interop_threads(1)

VALUES, OFFSETS = "__values", "__offsets"  # merlin-systems' names for a ragged column's parts


def right_padded(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[B, max row length] with each row's values first and 0 after them."""
    offsets = offsets.astype(np.int64)
    lengths = offsets[1:] - offsets[:-1]
    width = int(lengths.max()) if len(lengths) else 0
    positions = np.arange(width)
    real = positions[None, :] < lengths[:, None]
    if values.size == 0:
        return np.zeros((len(lengths), width), dtype=values.dtype)
    index = np.where(real, offsets[:-1, None] + positions[None, :], 0)
    return np.where(real, values[index], 0).astype(values.dtype)


def as_model_dtype(array: np.ndarray) -> torch.Tensor:
    """Codes as int64, continuous values as float32 (the model.pt contract)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32 if array.dtype.kind == "f" else np.int64))


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        self.model = torch.jit.load(str(folder / "model.pt"), map_location="cpu").eval()
        self.arguments = [argument.name for argument in self.model.forward.schema.arguments[1:]]
        config = json.loads(args["model_config"])
        declared = {tensor["name"] for tensor in config["input"]}
        self.ragged = {name for name in self.arguments if name + VALUES in declared}
        missing = [name for name in self.arguments if name not in self.ragged and name not in declared]
        if missing:
            raise pb_utils.TritonModelException(
                f"model.pt reads {missing}, which config.pbtxt does not declare (declared: {sorted(declared)})")
        self.outputs = [tensor["name"] for tensor in config["output"]]  # model.pt returns them in this order

    def _argument(self, request, name: str) -> torch.Tensor:
        if name in self.ragged:
            values = pb_utils.get_input_tensor_by_name(request, name + VALUES).as_numpy()
            offsets = pb_utils.get_input_tensor_by_name(request, name + OFFSETS).as_numpy()
            return as_model_dtype(right_padded(values.reshape(-1), offsets.reshape(-1)))
        return as_model_dtype(pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1, 1))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                inputs = [self._argument(request, name) for name in self.arguments]
                with torch.inference_mode():
                    results = self.model(*inputs)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(name, result.numpy())
                                                             for name, result in zip(self.outputs, results)]))
            except Exception as error:  # one bad request must not take the model down
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(error).__name__}: {error}")))
        return responses
