"""A traced model follows its inputs' device: model.pt traced on one device (the CPU here,
cuda:0 on a GPU export) pins no device in its graph, so Triton may run it on any GPU. And the
serving computation less trim_padding reads no value on the host, so a CUDA graph can capture it:
meta tensors hold no values, so a run on the meta device fails on any .item(), bool(), int() or
nonzero, as a capture does."""
from __future__ import annotations

import pytest
import torch

from export.torchscript import best_items, example_inputs, follow_input_device, kept_events, serving_module, trace
from training.model.features import FeatureSpec
from training.model.configuration import ModelConfig
from training.model.next_item import NextItemModel

SPEC = FeatureSpec(item="items", item_cardinality=60, categorical={"category": 8}, continuous=("price",),
                   context_categorical={"device": 4}, context_continuous=("age",))
BODIES = [("gpt2", "clm"), ("bert", "mlm"), ("xlnet", "plm"), ("gru", "clm")]  # HF masks, positions, XLNet's own, torch's GRU state


def _model(architecture: str, task: str) -> NextItemModel:
    torch.manual_seed(0)
    config = ModelConfig(architecture=architecture, task=task, d_model=16, n_layers=1, n_heads=2, max_length=10)
    return NextItemModel(SPEC, config).eval()


SEEN_WIDTH = 12  # exclude_seen with its own seen-items input: the scatter runs too


def _untrimmed(model: NextItemModel, exclude_seen: bool = True):
    """model.pt's serving module without trim_padding (the one step that cuts shapes on the host)."""
    return serving_module(model, 5, exclude_seen, seen_input=exclude_seen, trim_padding=False)


def _meta_inputs(model: NextItemModel) -> list[torch.Tensor]:
    inputs = example_inputs(model, [7, 2, 4], torch.Generator().manual_seed(1), width=8, padding="left", seen_width=SEEN_WIDTH)
    return [value.to("meta") for value in inputs]


@pytest.mark.parametrize("architecture,task", BODIES)
def test_model_pt_traced_on_the_cpu_holds_no_device_constant(architecture, task, tmp_path):
    path = tmp_path / "model.pt"
    trace(_model(architecture, task), 5, exclude_seen=True).save(str(path))
    graph = torch.jit.load(str(path)).inlined_graph  # findAllNodes also walks the blocks of branches
    pinned = [str(node).strip() for node in graph.findAllNodes("prim::Constant") if node.output().type().kind() == "DeviceObjType"]
    assert pinned == [] and 'value="cpu"' not in str(graph), pinned[:3]


@pytest.mark.parametrize("architecture,task", BODIES)
def test_a_model_traced_on_the_cpu_without_trim_padding_runs_on_the_meta_device(architecture, task):
    model = _model(architecture, task)
    example = example_inputs(model, [5, 3], torch.Generator().manual_seed(0), width=kept_events(model), seen_width=SEEN_WIDTH)
    with torch.no_grad():
        traced = follow_input_device(torch.jit.trace(_untrimmed(model), example, check_trace=False)).to("meta")
        codes, scores = traced(*_meta_inputs(model))
    assert codes.device.type == scores.device.type == "meta" and codes.shape == scores.shape == (3, 5)


@pytest.mark.parametrize("architecture,task", BODIES)
def test_the_eager_serving_module_without_trim_padding_reads_nothing_on_the_host_under_a_capture(architecture, task, monkeypatch):
    """What bench.model_step captures as a CUDA graph. While a stream captures, HF bodies skip
    their host-side check of the mask (`transformers.utils.is_tracing`); torch says so here."""
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    model = _model(architecture, task)
    with torch.no_grad():
        codes, scores = _untrimmed(model).to("meta")(*_meta_inputs(model))
    assert codes.device.type == scores.device.type == "meta" and codes.shape == scores.shape == (3, 5)


def test_trim_padding_reads_the_host_so_a_meta_run_fails_with_it():
    model = _model("gru", "clm")
    serving = serving_module(model, 5, exclude_seen=True, seen_input=True).to("meta")
    with torch.no_grad(), pytest.raises(RuntimeError, match="meta tensors"):
        serving(*_meta_inputs(model))


def test_best_items_over_many_chunks_runs_on_the_meta_device():
    codes, scores = best_items(torch.empty(4, 70, device="meta"), 5, chunk=8)  # two stages: 8 chunks and a tail
    assert codes.shape == scores.shape == (4, 5) and codes.dtype == torch.int64 and scores.device.type == "meta"


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
        want_codes, want_scores = _untrimmed(model, exclude_seen=False)(*inputs)
    assert codes.device == gpu and torch.equal(codes.cpu(), want_codes)
    torch.testing.assert_close(scores.cpu(), want_scores, rtol=1e-4, atol=1e-4)
