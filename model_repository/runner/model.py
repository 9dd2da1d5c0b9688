"""Triton python model: runs the exported TorchScript `model.pt` (the `--torch-runtime
python` variant of the model step; same inputs, outputs and parameters as the libtorch one:
model.pt returns one tensor per config output, in config order).

Requests of one dynamic batch that share a width are concatenated and run as one forward,
as the libtorch backend batches same-shaped requests. Torch threads come from the config's
INTRA_OP_THREAD_COUNT / INTER_OP_THREAD_COUNT parameters (1 on CPUs: the steps share cores).
"""
import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        torch.set_num_threads(int(parameters.get("INTRA_OP_THREAD_COUNT", "1")))
        torch.set_num_interop_threads(int(parameters.get("INTER_OP_THREAD_COUNT", "1")))
        gpu = args["model_instance_kind"] == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.model = torch.jit.load(os.path.join(folder, "model.pt"), map_location=self.device).eval()
        self.inputs = [item["name"] for item in config["input"]]
        self.outputs = [item["name"] for item in config["output"]]

    def execute(self, requests):
        arrays = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs] for r in requests]
        responses = [None] * len(requests)
        by_width = {}
        for index, inputs in enumerate(arrays):
            by_width.setdefault(tuple(a.shape[1:] for a in inputs), []).append(index)
        for group in by_width.values():
            batch = [torch.from_numpy(np.concatenate([arrays[i][j] for i in group])).to(self.device)
                     for j in range(len(self.inputs))]
            with torch.inference_mode():
                results = [result.cpu().numpy() for result in self.model(*batch)]
            start = 0
            for i in group:
                rows = arrays[i][0].shape[0]
                responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(name, result[start:start + rows])
                                                           for name, result in zip(self.outputs, results)])
                start += rows
        return responses
