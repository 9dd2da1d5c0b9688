"""Check merlin's packaging for real, then measure it once.

Starts the real Triton on a repository from build.py, sends one user's raw ML-1M events (all
but the last) over gRPC, and checks the scores against `next_item_scores` of the offline model
on the workflow-transformed events (within 1e-4; the same -inf entries). With --perf, runs
perf_analyzer over gRPC at concurrency 1 on distinct sessions and prints throughput and p50.

    PYTHONPATH=. .venv/bin/python -m bench.merlin_reference.verify RUN --work /tmp/merlin_ref \
        [--model-pt MODEL_PT] [--user 1m_1] [--perf-sessions 300 --perf-requests 100]
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
from bench.merlin_reference.perf_input import write_perf_input
from training import prepared
from training import run_dir as runs
from training.datasets import movielens

TOLERANCE = 1e-4


def history(events: pd.DataFrame, key: str, time_column: str) -> pd.DataFrame:
    """Each sequence's events minus its last (by time, stable)."""
    ordered = events.sort_values([key, time_column], kind="stable")
    return ordered[ordered.groupby(key, sort=False).cumcount(ascending=False) > 0]


def offline_scores(run: Path, session: pd.DataFrame) -> np.ndarray:
    """`next_item_scores` [1, catalog] of the run's model on the workflow-transformed events."""
    import nvtabular as nvt
    import torch

    workflow = nvt.Workflow.load(str(run / runs.DATA / prepared.WORKFLOW_DIR))
    row = workflow.transform(session.reset_index(drop=True))
    if len(row) != 1:
        raise ValueError(f"expected one sequence after the workflow, got {len(row)}")
    model, _ = runs.load_model(run)
    batch = {name: torch.tensor(np.asarray(row[name].iloc[0])[None, :]) for name in model.spec.list_columns}
    for name in model.spec.list_columns:
        batch[name] = batch[name].float() if name in model.spec.continuous else batch[name].long()
    for name in model.spec.context_columns:
        batch[name] = torch.tensor(row[name].to_numpy())
    with torch.no_grad():
        return model.next_item_scores(batch).float().numpy()


def served_scores(url: str, reference: dict, session: pd.DataFrame) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, dtype in reference["inputs"].items():
        values = session[name].to_numpy()
        values = values.astype(object) if dtype == "BYTES" else values.astype(np.int64 if dtype == "INT64" else np.float64)
        tensor = grpcclient.InferInput(name, [len(values)], dtype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    client = grpcclient.InferenceServerClient(url)
    result = client.infer(reference["model_name"], inputs, outputs=[grpcclient.InferRequestedOutput(reference["output"])])
    return result.as_numpy(reference["output"])


def compare(expected: np.ndarray, got: np.ndarray) -> float:
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
    parser.add_argument("--perf-sessions", type=int, default=0, help="distinct sessions for perf_analyzer (0: no perf)")
    parser.add_argument("--perf-requests", type=int, default=100, help="requests per measurement window")
    args = parser.parse_args(argv)

    from bench.serving import perf_analyzer, statistics, step_times
    from serve.server import TritonServer

    args.work.mkdir(parents=True, exist_ok=True)
    model_pt = args.model_pt
    if model_pt is None:
        from export.repository import ExportOptions, export

        exported = export(args.run, args.work / "hf4rec_repo", ExportOptions(torch_runtime="python"))
        model_pt = Path(exported["repo"]) / f"{exported['name']}_model" / str(exported["version"]) / "model.pt"
    reference = build_repository(args.run, model_pt, args.work / "repo")
    time_column = prepared.load_summary(args.run / runs.DATA)["columns"]["time"]
    events = history(movielens.load_events("ml-1m"), reference["sequence_key"], time_column)
    session = events[events[reference["sequence_key"]] == args.user]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = offline_scores(args.run, session)
    report = {"user": args.user, "events": len(session)}
    with TritonServer(args.work / "repo", log_path=args.work / "server.log") as server:
        started = time.perf_counter()
        got = served_scores(server.grpc_url, reference, session)
        report["first_request_s"] = round(time.perf_counter() - started, 3)
        report["max_abs_difference"] = compare(expected, got)
        if args.perf_sessions:
            users = events[reference["sequence_key"]].drop_duplicates().iloc[: args.perf_sessions * 2]
            sample = events[events[reference["sequence_key"]].isin(users)]
            report["perf_input"] = write_perf_input(sample, args.work / "perf_input.json", reference["inputs"],
                                                    reference["sequence_key"], max_sessions=args.perf_sessions)
            report["perf"] = perf_analyzer(server.grpc_url, reference["model_name"], args.work / "perf_input.json",
                                           args.work / "perf.csv", args.perf_requests)
            report["server_side"] = step_times({}, statistics(server.grpc_url))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
