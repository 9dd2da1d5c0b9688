"""Triton python model: the feature-transform step (raw session events -> model inputs).

Each request is transformed on its own (`compiled.RequestTransform`, built from the
fitted workflow at export; with the user's earlier events for a session-aware model); a bad request gets INVALID_ARG naming the input, and the
other requests of the same batch are answered normally. The request bounds are the
config's parameters (RequestTransform's keyword arguments, set by export).
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compiled import RequestError, RequestTransform  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        config = json.loads(args["model_config"])
        limits = {name: int(value["string_value"]) for name, value in config.get("parameters", {}).items()}
        self.transform = RequestTransform(folder, **limits)
        self.event_count = config["input"][-1]["name"]  # export lists the per-session event count last

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        try:
            columns = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                       for name in [*self.transform.inputs, *self.transform.history_inputs.values()]}
            counts = pb_utils.get_input_tensor_by_name(request, self.event_count).as_numpy()
            outputs = self.transform.transform(columns, counts)
        except RequestError as error:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
        return pb_utils.InferenceResponse([pb_utils.Tensor(name, np.ascontiguousarray(values))
                                           for name, values in outputs.items()])
