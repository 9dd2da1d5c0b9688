"""The last leg of `make demo`: serve the exported ensemble, ask it for a few held-out users.

    python -m serve.demo --run RUN_DIR --repo MODEL_REPOSITORY [--users 5] [--k 10]

Writes those users' events (each without its last, held-out event) to a csv beside the run,
starts the local Triton on the repository, runs the client's CLI on the csv, and prints
whether each held-out item is among the recommendations, with the run's offline metrics.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from serve.server import TritonServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    from training import run_dir
    from training.prepare import raw_events
    from training.views import held_out

    all_events, columns, key = raw_events(run_dir.data_dir(args.run))
    events, last = held_out(all_events, key, columns.time, args.users)
    targets = last[columns.item]
    requests = args.run / "held_out_events.csv"
    run_dir.replace_file(requests, lambda tmp: events.to_csv(tmp, index=False))
    with TritonServer(args.repo, log_path=args.run / "tritonserver.log") as server:
        print(f"Triton serving {args.repo} on gRPC {server.grpc_url}; asking for {args.users} held-out users:\n")
        print(f"$ python -m client --url {server.grpc_url} --input {requests} --k {args.k} --json")
        answer = subprocess.run([sys.executable, "-m", "client", "--url", server.grpc_url, "--input", str(requests),
                                 "--k", str(args.k), "--json"], capture_output=True, text=True)
    if answer.returncode != 0:
        raise SystemExit(f"client failed: {answer.stderr.strip()}")
    recommended = json.loads(answer.stdout)
    for user, items in recommended.items():
        ids = [item["item_id"] for item in items]
        target = targets[user]
        hit = f"held-out item at rank {ids.index(target) + 1}" if target in ids else "held-out item not in the top-k"
        print(f"\n{key} {user} (next: {target!r}; {hit}):")
        for item in items:
            print(f"  {item['score']:7.3f}  {item['item_id']}")
    metrics = json.loads((args.run / "metrics.json").read_text()).get("test", {})
    print("\noffline test metrics of this run: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "@10" in k))


if __name__ == "__main__":
    main()
