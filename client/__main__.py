"""`python -m client`: recommend for the sessions of an events file (parquet or csv) and print them
(a session-aware model: for each user's current session, keyed by the user).

    python -m client --url localhost:8001 --input events.parquet --k 10 [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

import pandas as pd
import pyarrow.parquet as pq
from tritonclient.utils import InferenceServerException

from client.recommender import PROTOCOLS, RecommenderClient
from client.sessions import RequestSpec
from model_repository.contract import DEFAULT_NAME

READERS = (".parquet", ".csv")


class Parser(argparse.ArgumentParser):
    """argparse, a bad argument answered in one line (as training/cli.py's Parser)."""

    def error(self, message: str) -> NoReturn:
        refuse(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="python -m client", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="localhost:8001", help="host:port (8001 gRPC, 8000 HTTP by default)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    parser.add_argument("--model", default=DEFAULT_NAME, help="the ensemble's name")
    parser.add_argument("--input", required=True, type=Path, help="events: .parquet or .csv, raw columns")
    parser.add_argument("--k", type=int, default=10, help="items per session")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument("--wait-s", type=float, default=30.0, help="seconds to wait for the server and model")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="seconds per request")
    return parser.parse_args(argv)


def read_events(path: Path, spec: RequestSpec) -> pd.DataFrame:
    """Text columns stay text in csv (ids like 007 keep their zeros)."""
    if path.suffix == ".parquet":
        # by path: pandas would hand pyarrow a Python file object, whose reader threads can abort the
        # process at exit (see training/data/parquet.py; the client is installed without training/)
        return pq.read_table(str(path)).to_pandas()
    text = {name: str for name, datatype in spec.datatypes.items() if datatype == "BYTES"}
    return pd.read_csv(path, dtype=text)


def render(answers: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps({str(session): [{"item_id": item, "score": float(score)}
                                          for item, score in zip(answer.item_ids, answer.scores)]
                           for session, answer in answers.items()})
    return "\n".join(f"{session}: " + ", ".join(f"{item} ({score:.4f})" for item, score in zip(answer.item_ids, answer.scores))
                     for session, answer in answers.items())


def refuse(error: BaseException | str) -> NoReturn:
    """Bad input in one line and exit code 2, as every hf4rec command (training/cli.py; the client
    installs without training/)."""
    print(f"client: {(str(error).strip().splitlines() or [type(error).__name__])[0]}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.input.is_file():
        refuse(f"--input {args.input}: expected an events file, found none")
    if args.input.suffix not in READERS:
        refuse(f"--input {args.input}: expected one of {list(READERS)}, got {args.input.suffix!r}")
    with RecommenderClient(args.url, protocol=args.protocol, model=args.model, timeout_s=args.timeout_s) as client:
        try:
            client.wait_ready(args.wait_s)
            spec = client.spec
        except (TimeoutError, InferenceServerException, OSError, LookupError, ValueError) as error:
            refuse(error)
        try:
            events = read_events(args.input, spec)
        except Exception as error:  # any reader failure is a bad file, told in one line
            refuse(f"--input {args.input}: cannot read it ({type(error).__name__}: {error})")
        try:
            answers = client.recommend(events, k=args.k)
        except ValueError as error:
            refuse(error)
        except (InferenceServerException, OSError) as error:
            refuse(f"the server refused the request: {error}")
    print(render(answers, args.json))


if __name__ == "__main__":
    main()
