"""Triton python model: the top-k step (the model's best item codes -> the k best original item ids + scores)."""
import json
import os
import sys

import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ranking import RankingError, TopK  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.ranking = TopK(os.path.join(args["model_repository"], args["model_version"]))
        config = json.loads(args["model_config"])  # names as export wrote them: codes, scores, k; ids, scores
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        codes, scores, k = (pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs)
        try:
            answer = self.ranking.top(codes, scores, k)
        except RankingError as error:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
        return pb_utils.InferenceResponse([pb_utils.Tensor(name, values) for name, values in zip(self.outputs, answer)])
