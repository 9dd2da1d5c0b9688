"""Held-out sessions of a run as inputs for the served ensemble: a client csv and perf_analyzer data.

    python -m examples.samples --run RUN_DIR --repo REPO [--name hf4rec] [--sessions 200] [--k 10] --out DIR

Writes DIR/held_out_events.csv (raw events, each session without its last event: what
`python -m client --input` reads) and DIR/perf_input.json (`perf_analyzer --input-data`: one
session per request, every event sent, as the client would send it). The request layout is
read from the exported ensemble's config, as the client reads it from a server.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from export.configs import read_config
from model_repository.contract import DEFAULT_NAME
from training import cli

EVENTS_CSV, PERF_INPUT = "held_out_events.csv", "perf_input.json"


def perf_entry(arrays: dict[str, np.ndarray]) -> dict:
    """One request of one session ([1, ...] arrays) in perf_analyzer's format: shape without
    the batch dimension, BYTES as strings."""
    return {name: {"content": [v.decode() if isinstance(v, bytes) else v for v in values.reshape(-1).tolist()],
                   "shape": list(values.shape[1:])} for name, values in arrays.items()}


def request_spec(repo: Path, name: str):
    from client.sessions import RequestSpec

    return RequestSpec.from_server(*read_config((Path(repo) / name / "config.pbtxt").read_text()))


def one_session_requests(sessions, spec, k: int) -> list:
    """Request batches of one session each, every event of it sent (the server keeps the last ones)."""
    from client.sessions import session_batches

    return session_batches(sessions, dataclasses.replace(spec, max_batch_size=1, max_events=spec.max_request_events), k)


def write_samples(run: Path, repo: Path, out: Path, name: str = DEFAULT_NAME, sessions: int = 200, k: int = 10) -> dict:
    from training.held_out import held_out_sequences
    from training.files import replace_file

    events = held_out_sequences(run, sessions).events  # the run first: the repository was exported from it
    spec = request_spec(repo, name)
    out.mkdir(parents=True, exist_ok=True)
    requests = one_session_requests(events, spec, k)
    replace_file(out / EVENTS_CSV, lambda tmp: events.to_csv(tmp, index=False))
    perf_input = json.dumps({"data": [perf_entry(request.inputs) for request in requests]})
    replace_file(out / PERF_INPUT, lambda tmp: tmp.write_text(perf_input))
    return {"sessions": len(requests), "events": len(events), "csv": str(out / EVENTS_CSV), "perf_input": str(out / PERF_INPUT)}


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m examples.samples", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the run directory the repository was exported from")
    parser.add_argument("--repo", type=Path, required=True, help="the exported model repository")
    parser.add_argument("--name", default=DEFAULT_NAME, help="the ensemble's name in the repository")
    parser.add_argument("--sessions", type=int, default=200, help="held-out sessions (one per request)")
    parser.add_argument("--k", type=int, default=10, help="items each request asks for")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with cli.answers_bad_input(parser.name, FileNotFoundError, ValueError, KeyError):
        if args.sessions < 1 or args.k < 1:
            raise ValueError(f"--sessions {args.sessions} --k {args.k}: expected both >= 1")
        summary = write_samples(args.run, args.repo, args.out, args.name, args.sessions, args.k)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
