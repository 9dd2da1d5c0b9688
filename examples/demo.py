"""The last leg of `make demo`: how the trained model compares with most-popular, then the served
ensemble asked for a few held-out users.

    python -m examples.demo --run RUN_DIR --repo MODEL_REPOSITORY [--users 5] [--k 10]

Prints one table (the run's test NDCG/HR@10 beside most-popular's, scored on the same rows and
protocol, and how long it trained), writes the users' events (each without its last, held-out
event) to a csv beside the run, starts the local Triton on the repository, runs the client's CLI
on the csv and prints each user's recommendations with the held-out item marked. Every metric
of the run stays in RUN_DIR/metrics.json.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from serve.server import TritonServer, TritonServerError
from training.files import replace_file
from training import cli


def comparison(run: Path) -> str:
    """The run's test metrics beside most-popular's on the same split, rows and seen-item rule."""
    from training import run_dir
    from training.baselines import most_popular
    from training.batches import SequenceData
    from training.evaluate import evaluate_scores

    result = json.loads((run / "metrics.json").read_text())
    model, config = run_dir.load_model(run)
    train = SequenceData(run_dir.data_dir(run), "train", model.spec)
    test = SequenceData(run_dir.data_dir(run), "test", model.spec)
    popular = evaluate_scores(most_popular(train), test, (10,), config.train.exclude_seen, protocol=config.train.eval_protocol)
    ours = result["test"]
    model_name = f"{config.model.architecture} {config.model.task}, trained {result['train_seconds'] / 60:.1f} min"
    seen = "seen items excluded" if config.train.exclude_seen else "seen items ranked too"
    lines = [
        f"Test split: {len(test):,} sequences, each one's held-out item ranked among "
        f"{model.spec.item_cardinality - 3:,} items ({seen}, {config.train.eval_protocol} protocol):",
        f"  {'':32s} NDCG@10   HR@10",
        f"  {model_name:32s} "
        f"{ours['ndcg@10']:.4f}   {ours['hr@10']:.4f}",
        f"  {'most popular':32s} {popular['ndcg@10']:.4f}   {popular['hr@10']:.4f}",
        f"  -> the model's NDCG@10 is {ours['ndcg@10'] / max(popular['ndcg@10'], 1e-12):.1f}x most popular's "
        f"(every metric: {run / 'metrics.json'})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m examples.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    from training.held_out import held_out_sequences

    with cli.answers_bad_input(parser.name, FileNotFoundError, ValueError, TritonServerError):
        users = held_out_sequences(args.run, args.users)
        server = TritonServer(args.repo, log_path=args.run / "tritonserver.log")
        print(comparison(args.run), flush=True)
    events, key, targets = users.events, users.key, users.last[users.columns.item]
    requests = args.run / "held_out_events.csv"
    replace_file(requests, lambda tmp: events.to_csv(tmp, index=False))
    with cli.answers_bad_input(parser.name, TritonServerError):
        server.start()
    try:
        print(f"\nServing {args.repo} on the local Triton (gRPC {server.grpc_url}); {args.users} held-out users:")
        print(f"$ python -m client --url {server.grpc_url} --input {requests} --k {args.k} --json")
        answer = subprocess.run([sys.executable, "-m", "client", "--url", server.grpc_url, "--input", str(requests),
                                 "--k", str(args.k), "--json"], capture_output=True, text=True)
    finally:
        server.stop()
    if answer.returncode != 0:
        cli.refuse(parser.name, f"the client failed: {answer.stderr.strip()}")
    for user, items in json.loads(answer.stdout).items():
        ids = [item["item_id"] for item in items]
        target = targets[user]
        hit = f"at rank {ids.index(target) + 1}" if target in ids else f"not in the top {args.k}"
        print(f"\n{key} {user}: next was {target!r} ({hit})")
        for rank, item in enumerate(items, 1):
            mark = "  <- the held-out next item" if item["item_id"] == target else ""
            print(f"  {rank:2d}. {item['score']:7.3f}  {item['item_id']}{mark}")


if __name__ == "__main__":
    main()
