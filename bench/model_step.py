"""The model step alone on a GPU: sessions/s at batch 1, 64 and 1024 over catalogs of 100k and 1M items.

    PYTHONPATH=. .venv/bin/python -m bench.model_step [--device cuda] [--catalogs 100000,1000000]
        [--batches 1,64,1024] [--events 20] [--d-model 256] [--layers 2] [--heads 4] [--precision bf16]
        [--k 100] [--repeats 20] [--out build/bench/model_step.json]

A 2-layer decoder (GPT-2 body, random weights: speed does not depend on them) over full sessions
of `--events` item codes. Every variant runs the one serving computation `model.pt` ships
(export.torchscript's serving module: trim_padding, next_item_scores, best_items with its
two-stage top-k and ties to the lower code), three ways:
  eager        that module in eager PyTorch
  model_pt     what `python -m export` ships: the module traced (model.pt)
  cuda_graph   (CUDA only) that eager module without trim_padding, captured once per batch size
               as a CUDA graph and replayed (no per-kernel launch cost). Cutting padding columns
               sets shapes from values on the host, which a graph of fixed shapes cannot hold;
               padding changes no score, so the items are the same (these sessions have none to
               cut; tests/test_bench_model_step.py checks both ways agree on padded batches).
               Should a capture fail (a host synchronisation), the row says so (`captured: false`,
               the reason) and holds no time rather than timing some other computation.
Every variant must return the eager variant's best items on the same batch (bf16: the same best
item); the JSON keeps median seconds per batch, sessions/s and that agreement. On a CPU, run it
small (tests/test_bench_model_step.py does) to check it end to end.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

from bench.output import write_json
from export.torchscript import PRECISIONS, serving_module, trace
from training.model.features import FeatureSpec
from training.model.configuration import ModelConfig
from training.model.next_item import FIRST_ITEM_CODE, NextItemModel

ITEM = "item_id_list"


def build_model(catalog: int, args) -> NextItemModel:
    spec = FeatureSpec(item=ITEM, item_cardinality=catalog + FIRST_ITEM_CODE)
    config = ModelConfig(architecture="gpt2", task="clm", d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                         dropout=0.0, attention_dropout=0.0, max_length=args.events)
    torch.manual_seed(0)
    return NextItemModel(spec, config).eval()


def _timer(device: torch.device):
    def measure(run, repeats: int) -> float:
        run()  # warm-up: allocations, autotuning, the graph executor's first runs
        run()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    return measure


def cuda_graph(step, items: torch.Tensor):
    """`step` captured as one CUDA graph for this batch's shape; call it with new items of that shape."""
    static = items.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = step(static)

    def replay(new_items: torch.Tensor):
        static.copy_(new_items)
        graph.replay()
        return output
    return replay


def variants(step, untrimmed, shipped, items: torch.Tensor, capture=None) -> tuple[dict, dict]:
    """name -> a call returning (best codes, scores) of `items`; and name -> why it could not be built.
    `capture(untrimmed, items)`: a graph of the step without trim_padding (CUDA only)."""
    built = {"eager": lambda: step(items), "model_pt": lambda: shipped(items)}
    failed = {}
    if capture is not None:
        try:
            replay = capture(untrimmed, items)
            built["cuda_graph"] = lambda: replay(items)
        except RuntimeError as error:  # the serving computation synchronises with the host
            failed["cuda_graph"] = str(error).strip().splitlines()[0]
    return built, failed


def measure_catalog(catalog: int, args, device: torch.device) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shipped = trace(build_model(catalog, args), args.k, exclude_seen=False, device=device.type, precision=args.precision)
    model = build_model(catalog, args).to(device=device, dtype=PRECISIONS[args.precision])
    step = serving_module(model, args.k, exclude_seen=False, precision=args.precision)
    untrimmed = serving_module(model, args.k, exclude_seen=False, precision=args.precision, trim_padding=False)
    measure = _timer(device)
    rows = []
    generator = torch.Generator().manual_seed(1)
    for batch in args.batches:
        items = torch.randint(FIRST_ITEM_CODE, catalog + FIRST_ITEM_CODE, (batch, args.events), generator=generator).to(device)
        with torch.inference_mode():
            built, failed = variants(step, untrimmed, shipped, items, cuda_graph if device.type == "cuda" else None)
            answers = {name: run()[0] for name, run in built.items()}
            reference = answers["eager"]
            for name, run in built.items():
                seconds = measure(run, args.repeats)
                same = (answers[name] == reference).all(dim=1) if args.precision == "fp32" \
                    else answers[name][:, 0] == reference[:, 0]
                rows.append({"catalog": catalog, "batch": batch, "variant": name, "captured": True, "seconds_per_batch": seconds,
                             "sessions_per_s": batch / seconds, "agrees_with_eager": float(same.float().mean())})
                print(f"catalog {catalog:>9,} batch {batch:>5} {name:>11}: {batch / seconds:>12,.0f} sessions/s "
                      f"({seconds * 1e3:.3f} ms/batch, agrees {rows[-1]['agrees_with_eager']:.0%})", flush=True)
        for name, reason in failed.items():
            rows.append({"catalog": catalog, "batch": batch, "variant": name, "captured": False, "reason": reason})
            print(f"catalog {catalog:>9,} batch {batch:>5} {name:>11}: not captured: {reason}", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--catalogs", default="100000,1000000")
    parser.add_argument("--batches", default="1,64,1024")
    parser.add_argument("--events", type=int, default=20, help="events per session (all real)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16")
    parser.add_argument("--k", type=int, default=100, help="best items per session")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per point; the median is kept")
    parser.add_argument("--out", type=Path, default=Path("build/bench/model_step.json"))
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(torch.get_num_threads(), 1))
    rows = [row for catalog in (int(c) for c in args.catalogs.split(",")) for row in measure_catalog(catalog, args, device)]
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "settings": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}
    write_json(args.out, report)


if __name__ == "__main__":
    main()
