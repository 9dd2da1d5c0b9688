"""bench.model_step, the GPU model-step benchmark, run small on this CPU: every variant runs the
serving computation model.pt ships (the same module, eager, traced, or captured as a CUDA graph),
is measured at every point and returns the same best items. Its speed is a benchmark's business,
not a test's; on a GPU it adds the CUDA-graph variant, which leaves out trim_padding."""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest
import torch

from bench import model_step
from export.torchscript import _Serving, example_inputs, serving_module, trace
from training.model.next_item import FIRST_ITEM_CODE

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
    """The graph is captured from the serving module the eager variant calls, less trim_padding,
    and all of them settle ties as model.pt does: with every score equal, the k lowest item codes, in order."""
    model = _constant_scores(model_step.build_model(50, SMALL))
    step = serving_module(model, 5, exclude_seen=False)
    untrimmed = serving_module(model, 5, exclude_seen=False, trim_padding=False)
    assert isinstance(untrimmed, _Serving) and untrimmed.model is step.model is model and not untrimmed.trims_padding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shipped = trace(_constant_scores(model_step.build_model(50, SMALL)), 5, exclude_seen=False)
    captured = []

    def capture(what, items):
        captured.append(what)
        return lambda new_items: what(new_items)

    items = torch.randint(FIRST_ITEM_CODE, 50 + FIRST_ITEM_CODE, (3, SMALL.events), generator=torch.Generator().manual_seed(0))
    built, failed = model_step.variants(step, untrimmed, shipped, items, capture)
    assert captured == [untrimmed] and set(built) == {"eager", "model_pt", "cuda_graph"} and not failed
    lowest = torch.arange(FIRST_ITEM_CODE, FIRST_ITEM_CODE + 5).expand(3, 5)
    with torch.inference_mode():
        for name, run in built.items():
            assert torch.equal(run()[0], lowest), name


def test_the_captured_step_without_trim_padding_gives_the_eager_steps_items_on_padded_batches():
    """Padding columns all rows share change no score: the graph's untrimmed step answers as the
    eager step that cuts them, on right-padded batches wider than the longest session."""
    model = model_step.build_model(300, SMALL)
    step = serving_module(model, 10, exclude_seen=False)
    untrimmed = serving_module(model, 10, exclude_seen=False, trim_padding=False)
    generator = torch.Generator().manual_seed(3)
    for lengths, width in (([1, 3, 2], SMALL.events), ([4, 1], SMALL.events + 3), ([SMALL.events, 2], SMALL.events)):
        items, = example_inputs(model, lengths, generator, width=width)
        assert (items[:, max(lengths):] == 0).all()
        built, _ = model_step.variants(step, untrimmed, step, items, capture=lambda what, items: what)  # the graph's step, uncaptured
        with torch.inference_mode():
            (codes, scores), (graph_codes, graph_scores) = built["eager"](), built["cuda_graph"]()
        assert torch.equal(graph_codes, codes), (lengths, width)
        torch.testing.assert_close(graph_scores, scores, rtol=1e-5, atol=1e-5)


def test_a_step_that_cannot_be_captured_is_reported_not_replaced():
    def capture(step, items):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors ...")

    built, failed = model_step.variants(lambda items: items, lambda items: items, lambda items: items, torch.zeros(1, 1), capture)
    assert set(built) == {"eager", "model_pt"}
    assert failed == {"cuda_graph": "CUDA error: operation not permitted when stream is capturing"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU; this machine has none")
def test_model_step_bench_adds_cuda_graphs_on_a_gpu(tmp_path):
    out = tmp_path / "model_step.json"
    model_step.main(["--catalogs", "100000", "--batches", "1,64", "--repeats", "3", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert {(r["batch"], r["variant"]) for r in rows} == {(b, v) for b in (1, 64) for v in ("eager", "model_pt", "cuda_graph")}
    assert all(r["captured"] for r in rows), [r["reason"] for r in rows if not r["captured"]]  # nothing syncs with the host
    assert all(r["agrees_with_eager"] == 1.0 for r in rows)
