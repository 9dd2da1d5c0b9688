"""bench.model_step, the GPU model-step benchmark, run small on this CPU: every variant runs the
serving computation model.pt ships (the same module, eager, traced, or captured as a CUDA graph),
is measured at every point and returns the same best items. Its speed is a benchmark's business,
not a test's; on a GPU it adds the CUDA-graph variant."""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest
import torch

from bench import model_step
from export.torchscript import _Serving, trace
from training.model import FIRST_ITEM_CODE

SMALL = SimpleNamespace(d_model=32, layers=1, heads=2, events=6)


def test_model_step_bench_runs_small_on_the_cpu_and_its_variants_agree(tmp_path):
    out = tmp_path / "model_step.json"
    # 70,000 items: over two 32,768-item chunks, so model.pt takes its two-stage top-k
    model_step.main(["--device", "cpu", "--catalogs", "2000,70000", "--batches", "1,8", "--events", "6",
                     "--d-model", "32", "--layers", "1", "--heads", "2", "--precision", "fp32", "--k", "20",
                     "--repeats", "2", "--out", str(out)])
    report = json.loads(out.read_text())
    points = {(r["catalog"], r["batch"], r["variant"]) for r in report["rows"]}
    assert points == {(c, b, v) for c in (2000, 70000) for b in (1, 8) for v in ("eager", "model_pt")}
    for row in report["rows"]:
        assert row["agrees_with_eager"] == 1.0, row
        assert row["sessions_per_s"] == pytest.approx(row["batch"] / row["seconds_per_batch"]) and row["seconds_per_batch"] > 0
    assert report["device"] == "cpu" and report["settings"]["precision"] == "fp32"
    assert not list(tmp_path.glob(".*"))


def _constant_scores(model):
    with torch.no_grad():
        model.item_weights().zero_()
        model.output_bias.zero_()
    return model


def test_every_variant_runs_the_serving_module_model_pt_is_traced_from():
    """The graph is captured from the very module the eager variant calls, and all of them settle
    ties as model.pt does: with every score equal, the k lowest item codes, in order."""
    model = _constant_scores(model_step.build_model(50, SMALL))
    step = model_step.serving_step(model, 5, "fp32")
    assert isinstance(step, _Serving) and step.model is model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shipped = trace(_constant_scores(model_step.build_model(50, SMALL)), 5, exclude_seen=False)
    captured = []

    def capture(what, items):
        captured.append(what)
        return lambda new_items: what(new_items)

    items = torch.randint(FIRST_ITEM_CODE, 50 + FIRST_ITEM_CODE, (3, SMALL.events), generator=torch.Generator().manual_seed(0))
    built, failed = model_step.variants(step, shipped, items, capture)
    assert captured == [step] and set(built) == {"eager", "model_pt", "cuda_graph"} and not failed
    lowest = torch.arange(FIRST_ITEM_CODE, FIRST_ITEM_CODE + 5).expand(3, 5)
    with torch.inference_mode():
        for name, run in built.items():
            assert torch.equal(run()[0], lowest), name


def test_a_step_that_cannot_be_captured_is_reported_not_replaced():
    def capture(step, items):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors ...")

    built, failed = model_step.variants(lambda items: items, lambda items: items, torch.zeros(1, 1), capture)
    assert set(built) == {"eager", "model_pt"}
    assert failed == {"cuda_graph": "CUDA error: operation not permitted when stream is capturing"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU; this machine has none")
def test_model_step_bench_adds_cuda_graphs_on_a_gpu(tmp_path):
    out = tmp_path / "model_step.json"
    model_step.main(["--catalogs", "100000", "--batches", "1,64", "--repeats", "3", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert {(r["batch"], r["variant"]) for r in rows} == {(b, v) for b in (1, 64) for v in ("eager", "model_pt", "cuda_graph")}
    assert all(r["agrees_with_eager"] == 1.0 for r in rows if r["captured"])
    assert all(r["reason"] for r in rows if not r["captured"])  # the capture's own error, never a substitute timing
