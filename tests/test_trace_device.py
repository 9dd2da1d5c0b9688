"""A traced model follows its inputs' device: model.pt traced on one device (the CPU here,
cuda:0 on a GPU export) pins no device in its graph, so Triton may run it on any GPU."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from export.torchscript import best_items, example_inputs, follow_input_device, input_names, kept_events, trace
from training.features import FeatureSpec
from training.model import ModelConfig, NextItemModel

SPEC = FeatureSpec(item="items", item_cardinality=60, categorical={"category": 8}, continuous=("price",),
                   context_categorical={"device": 4}, context_continuous=("age",))
BODIES = [("gpt2", "clm"), ("bert", "mlm"), ("xlnet", "plm"), ("gru", "clm")]  # HF masks, positions, XLNet's own, torch's GRU state


def _model(architecture: str, task: str) -> NextItemModel:
    torch.manual_seed(0)
    config = ModelConfig(architecture=architecture, task=task, d_model=16, n_layers=1, n_heads=2, max_length=10)
    return NextItemModel(SPEC, config).eval()


class _NextItemScores(nn.Module):
    """next_item_scores over model.pt's inputs: the part of model.pt that reads no value on the
    host (trim_padding and best_items do, so the whole model.pt cannot run on the meta device)."""

    def __init__(self, model: NextItemModel):
        super().__init__()
        self.model, self.names = model, input_names(model)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        lists = set(self.model.spec.list_columns)
        batch = {name: value if name in lists else value.reshape(-1) for name, value in zip(self.names, inputs)}
        return self.model.next_item_scores(batch)


@pytest.mark.parametrize("architecture,task", BODIES)
def test_model_pt_traced_on_the_cpu_holds_no_device_constant(architecture, task, tmp_path):
    path = tmp_path / "model.pt"
    trace(_model(architecture, task), 5, exclude_seen=True).save(str(path))
    graph = torch.jit.load(str(path)).inlined_graph  # findAllNodes also walks the blocks of branches
    pinned = [str(node).strip() for node in graph.findAllNodes("prim::Constant") if node.output().type().kind() == "DeviceObjType"]
    assert pinned == [] and 'value="cpu"' not in str(graph), pinned[:3]


@pytest.mark.parametrize("architecture,task", BODIES)
def test_a_model_traced_on_the_cpu_runs_on_the_meta_device(architecture, task):
    model = _model(architecture, task)
    example = example_inputs(model, [5, 3], torch.Generator().manual_seed(0), width=kept_events(model))
    with torch.no_grad():
        traced = follow_input_device(torch.jit.trace(_NextItemScores(model), example, check_trace=False)).to("meta")
        inputs = example_inputs(model, [7, 2, 4], torch.Generator().manual_seed(1), width=8, padding="left")
        scores = traced(*[value.to("meta") for value in inputs])
    assert scores.device.type == "meta" and scores.shape == (3, SPEC.item_cardinality)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: on a CPU machine the meta test stands in for it")
@pytest.mark.parametrize("architecture,task", BODIES)
def test_model_pt_traced_on_the_cpu_ranks_on_the_last_gpu_as_on_the_cpu(architecture, task, tmp_path):
    model, path = _model(architecture, task), tmp_path / "model.pt"
    trace(model, 5, exclude_seen=False).save(str(path))
    gpu = torch.device("cuda", torch.cuda.device_count() - 1)
    shipped = torch.jit.load(str(path), map_location=gpu)
    inputs = example_inputs(model, [kept_events(model), 3, 1], torch.Generator().manual_seed(2), padding="inside")
    with torch.no_grad():
        codes, scores = shipped(*[value.to(gpu) for value in inputs])
        want_codes, want_scores = best_items(_NextItemScores(model)(*inputs).float(), 5)
    assert codes.device == gpu and torch.equal(codes.cpu(), want_codes)
    torch.testing.assert_close(scores.cpu(), want_scores, rtol=1e-4, atol=1e-4)
