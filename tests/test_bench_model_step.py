"""bench.model_step, the GPU model-step benchmark, run small on this CPU: every variant is
measured at every point and returns the same best items as eager PyTorch + torch.topk. Its
speed is a benchmark's business, not a test's; on a GPU it adds the CUDA-graph variant."""
from __future__ import annotations

import json

import pytest
import torch

from bench import model_step


def test_model_step_bench_runs_small_on_the_cpu_and_its_variants_agree(tmp_path):
    out = tmp_path / "model_step.json"
    # 70,000 items: over two 32,768-item chunks, so model.pt takes its two-stage top-k
    model_step.main(["--device", "cpu", "--catalogs", "2000,70000", "--batches", "1,8", "--events", "6",
                     "--d-model", "32", "--layers", "1", "--heads", "2", "--precision", "fp32", "--k", "20",
                     "--repeats", "2", "--out", str(out)])
    report = json.loads(out.read_text())
    points = {(r["catalog"], r["batch"], r["variant"]) for r in report["rows"]}
    assert points == {(c, b, v) for c in (2000, 70000) for b in (1, 8) for v in ("eager_topk", "model_pt")}
    for row in report["rows"]:
        assert row["agrees_with_eager"] == 1.0, row
        assert row["sessions_per_s"] == pytest.approx(row["batch"] / row["seconds_per_batch"]) and row["seconds_per_batch"] > 0
    assert report["device"] == "cpu" and report["settings"]["precision"] == "fp32"
    assert not list(tmp_path.glob(".*"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU; this machine has none")
def test_model_step_bench_adds_cuda_graphs_on_a_gpu(tmp_path):
    out = tmp_path / "model_step.json"
    model_step.main(["--catalogs", "100000", "--batches", "1,64", "--repeats", "3", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert {r["variant"] for r in rows} == {"eager_topk", "model_pt", "cuda_graph"}
    assert all(r["agrees_with_eager"] == 1.0 for r in rows)
