"""Triton python model: runs the exported TorchScript `model.pt` (the `--torch-runtime
python` variant of the model step; same inputs, outputs and parameters as the libtorch one,
plus INTER_OP_THREAD_COUNT: model.pt returns one tensor per config output, in config order).

A dynamic batch runs as one forward, as under the libtorch backend. Torch threads come from the config's
INTRA_OP_THREAD_COUNT / INTER_OP_THREAD_COUNT parameters (1 on CPUs: the steps share cores); this
stub process is the model instance's own, so setting them here touches no other model.
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
        # Triton batches only requests whose inputs have one shape (none of them is ragged),
        # so the whole dynamic batch concatenates into one forward, as under libtorch
        arrays = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs] for r in requests]
        batch = [torch.from_numpy(np.concatenate([inputs[j] for inputs in arrays])).to(self.device)
                 for j in range(len(self.inputs))]
        with torch.inference_mode():
            results = [result.cpu().numpy() for result in self.model(*batch)]
        responses, start = [], 0
        for inputs in arrays:
            rows = inputs[0].shape[0]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(name, result[start:start + rows])
                                                         for name, result in zip(self.outputs, results)]))
            start += rows
        return responses
