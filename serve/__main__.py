"""Serve a model repository on the local Triton until interrupted.

    python -m serve --repo model_repository/ [--host 127.0.0.1] [--http-port N] [--grpc-port N]
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path

from serve.server import TritonServer, TritonServerError, log_reason
from training import cli


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser(prog="python -m serve", description="Serve a model repository on the local Triton.")
    parser.add_argument("--repo", type=Path, required=True, help="Triton model repository folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback unless told otherwise)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log", type=Path, help="the server log (default: a new file in the temporary folder, named when ready)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with cli.answers_bad_input("serve", TritonServerError, FileNotFoundError):
        server = TritonServer(args.repo, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                              metrics_port=args.metrics_port, log_path=args.log).start()
    try:
        print(f"Triton ready: gRPC {server.grpc_url}, HTTP {server.http_url}, log {server.log_path}", flush=True)
        try:
            while not stop.wait(1.0) and server.process.poll() is None:
                pass
        except KeyboardInterrupt:
            pass
        if server.process.poll() is not None:
            cli.refuse("serve", f"tritonserver exited with code {server.process.returncode}: "
                            f"{log_reason(server.own_log())} (log {server.log_path})")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
