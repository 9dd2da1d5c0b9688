"""Export a trained run as a Triton ensemble (feature transform -> PyTorch model -> top-k).

    python -m export --run RUN_DIR [--repo build/model_repository] [--name hf4rec] [--version N]
        [--max-batch-size 64] [--top-k 100] [--device cpu|gpu] [--torch-runtime libtorch|python]
        [--exclude-seen | --no-exclude-seen] [--transform-instances N] [--model-instances N] [--topk-instances N]
        [--max-request-events N] [--max-id-bytes N]

The layout and the ensemble's input/output contract: model_repository/README.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from export.repository import SOURCES, ExportError, ExportOptions, export
from export.torchscript import PRECISIONS
from model_repository.contract import STEPS
from training import cli

DEFAULT_REPO = Path("build/model_repository")


def main(argv: list[str] | None = None) -> None:
    defaults = ExportOptions()
    parser = cli.Parser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory written by training.train")
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPO, help=f"model repository to add a version to (default {DEFAULT_REPO})")
    parser.add_argument("--name", default=defaults.name, help="the ensemble's name; steps are NAME_" + ", NAME_".join(STEPS))
    parser.add_argument("--version", type=int, help="version to write (default: one above the highest)")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size, help="sessions per batch")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="the largest k a request may ask for")
    parser.add_argument("--device", choices=["cpu", "gpu"], default=defaults.device, help="where every step runs (KIND_CPU or KIND_GPU)")
    parser.add_argument("--torch-runtime", choices=["libtorch", "python"], default=defaults.torch_runtime,
                        help="libtorch backend (NGC tritonserver) or model.pt in the python backend (no libtorch backend here)")
    parser.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                        help="never recommend the session's own items (default: the run's train.exclude_seen)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default=defaults.precision,
                        help="the model step's weights and arithmetic (bf16/fp16: for GPUs; scores come out in fp32)")
    parser.add_argument("--max-request-events", type=int, default=defaults.max_request_events,
                        help="events one request may carry, summed over its sessions (default: max batch size x the run's max_events)")
    parser.add_argument("--max-id-bytes", type=int, default=defaults.max_id_bytes,
                        help=f"bytes one string value (an id, a category) may have (default {defaults.max_id_bytes})")
    for step in STEPS:
        parser.add_argument(f"--{step}-instances", type=int, default=getattr(defaults, f"{step}_instances"),
                            help=f"instances of the {step} step per server (instance_group count)")
    args = parser.parse_args(argv)
    if args.repo.resolve() == SOURCES:
        cli.refuse("export", f"{SOURCES} holds the python model sources and is not a model repository "
                             f"(Triton would load every folder in it); use --repo {DEFAULT_REPO}")
    with cli.answers_bad_input(parser.name, ExportError, FileNotFoundError, ValueError):
        options = ExportOptions(name=args.name, version=args.version, max_batch_size=args.max_batch_size, top_k=args.top_k,
                                device=args.device, torch_runtime=args.torch_runtime, exclude_seen=args.exclude_seen,
                                transform_instances=args.transform_instances, model_instances=args.model_instances,
                                topk_instances=args.topk_instances, precision=args.precision,
                                max_request_events=args.max_request_events, max_id_bytes=args.max_id_bytes)
        result = export(args.run, args.repo, options)
    print(f"exported {args.run} as version {result['version']} of ensemble {result['name']!r} into {result['repo']} "
          f"({options.torch_runtime} model step on {options.device}, max batch {options.max_batch_size}, "
          f"k up to {options.top_k}, seen items {'excluded' if result['exclude_seen'] else 'kept'})")


if __name__ == "__main__":
    main()
