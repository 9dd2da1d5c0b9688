"""Check merlin's packaging for real, then measure it once.

Starts the real Triton on a repository from build.py, sends one user's raw ML-1M events (all
but the last) over gRPC, and checks the scores against `next_item_scores` of the offline model
on the workflow-transformed events (within 1e-4; the same -inf entries). bench.serving measures it.

    PYTHONPATH=. .venv/bin/python -m bench.merlin_reference.verify RUN --work /tmp/merlin_ref \
        [--model-pt MODEL_PT] [--user 1m_1]
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bench.merlin_reference.build import build_repository
from model_repository.contract import step_name
from training import run_dir as runs
from training.recommend import score_events
from training.held_out import held_out_sequences

TOLERANCE = 1e-4


def served_best(url: str, reference: dict, session: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, dtype in reference["inputs"].items():
        values = session[name].to_numpy()
        values = values.astype(object) if dtype == "BYTES" else values.astype(np.int64 if dtype == "INT64" else np.float64)
        tensor = grpcclient.InferInput(name, [len(values)], dtype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    client = grpcclient.InferenceServerClient(url)
    result = client.infer(reference["model_name"], inputs, outputs=[grpcclient.InferRequestedOutput(name)
                                                                     for name in reference["outputs"]])
    return tuple(result.as_numpy(name) for name in reference["outputs"])


def compare(expected: np.ndarray, got: np.ndarray) -> float:
    """Scores of the same items: equal -inf entries, finite ones within TOLERANCE."""
    if expected.shape != got.shape:
        raise AssertionError(f"scores: expected shape {expected.shape}, got {got.shape}")
    if not np.array_equal(np.isinf(expected), np.isinf(got)):
        raise AssertionError("scores: the -inf entries differ")
    finite = np.isfinite(expected)
    if not finite.any():
        raise AssertionError("scores: every entry is -inf; nothing to compare")
    difference = float(np.abs(expected[finite] - got[finite]).max())
    if difference > TOLERANCE:
        raise AssertionError(f"scores: max difference {difference:.2e} > {TOLERANCE}")
    return difference


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="a new folder for model.pt, the repository, logs")
    parser.add_argument("--model-pt", type=Path, help="default: the one `export` writes (into WORK/hf4rec_repo)")
    parser.add_argument("--user", default="1m_1", help="an ML-1M user whose strings are ASCII (see README.md)")
    parser.add_argument("--max-k", type=int, default=100, help="best items model.pt returns (export's --top-k)")
    args = parser.parse_args(argv)

    from serve.server import TritonServer

    args.work.mkdir(parents=True, exist_ok=True)
    model_pt = args.model_pt
    if model_pt is None:
        from export.repository import ExportOptions, export

        exported = export(args.run, args.work / "hf4rec_repo", ExportOptions(torch_runtime="python", top_k=args.max_k))
        model_pt = Path(exported["repo"]) / step_name(exported["name"], "model") / str(exported["version"]) / "model.pt"
    reference = build_repository(args.run, model_pt, args.work / "repo", args.max_k)
    held = held_out_sequences(args.run)
    events, key = held.events, held.key
    session = events[events[key] == args.user]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, scores, seen = score_events(args.run, session)
    if runs.load_config(args.run).train.exclude_seen:  # what export does by default
        np.put_along_axis(scores, seen, -np.inf, axis=1)
    expected_codes = np.argsort(-scores, axis=1, kind="stable")[:, : args.max_k]  # ties: the lower code first
    report = {"user": args.user, "events": len(session)}
    with TritonServer(args.work / "repo", log_path=args.work / "server.log") as server:
        started = time.perf_counter()
        codes, got = served_best(server.grpc_url, reference, session)
        report["first_request_s"] = round(time.perf_counter() - started, 3)
    if not np.array_equal(codes, expected_codes):
        raise AssertionError(f"best items: expected codes {expected_codes[0, :10].tolist()}..., got {codes[0, :10].tolist()}...")
    report["max_abs_difference"] = compare(np.take_along_axis(scores, expected_codes, axis=1), got)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
