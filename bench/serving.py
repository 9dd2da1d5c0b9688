"""Serving benchmark: our ensemble and its steps beside merlin-systems' packaging of the same
fitted workflow and the same model.pt, on one Triton (CPU), driven by perf_analyzer over gRPC.

    PYTHONPATH=. .venv/bin/python -m bench.serving --run RUN [--sessions 300] [--concurrency 1,2,4]
        [--requests 200] [--out build/bench/serving] [--torch-runtime python|libtorch] [--triton-home DIR]

OUT/repo is our export, its model step under --torch-runtime (the python runner by default: this
machine's Triton has no libtorch backend; `libtorch`, the export's default, needs a --triton-home
laid out as .triton/ whose backends/ holds pytorch/, e.g. one built from the NGC image's
backends; default: HF4REC_TRITON_HOME or .triton/), OUT/merlin_repo bench/merlin_reference's build on
OUT/repo/hf4rec_model/1/model.pt. Each request is one held-out session of the run's dataset, sent whole
(all its events but the last) to every step. Writes OUT/inputs/*.json (perf_analyzer
--input-data), OUT/serving.json, and prints the table, the ratios the targets are stated in, each
step's server-side times and the CPU each process (perf_analyzer, tritonserver, every python
stub) spent per request: on 2 shared cores that sum bounds the requests/s.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.merlin_reference.build import EXECUTOR
from bench.output import write_json
from export.configs import BACKENDS
from model_repository import contract
from serve.layout import TritonLayout
from training.files import replace_file

NAME = contract.DEFAULT_NAME
# what is measured -> the Triton model it sends to
MEASURED = {"ensemble": NAME, "model_step": contract.step_name(NAME, "model"),
            "transform_step": contract.step_name(NAME, "transform"),
            "merlin": EXECUTOR,  # merlin-systems' ensemble, on the ASCII-only sessions (merlin takes no other text)
            "ensemble_ascii": NAME}  # ours on merlin's sessions (those run shorter)
K = 10  # items a request asks the ensemble for
TOP_K = 100  # the export's maximum k: model.pt returns this many best items
STATS = ("queue", "compute_input", "compute_infer", "compute_output")  # Triton's per-model duration counters
TARGETS = {"transform_p50_ms_at_1": 1.0, "ensemble_over_model_p50": 1.5, "ensemble_over_merlin_throughput": 20.0}


def perf_analyzer(layout: TritonLayout, url: str, model: str, input_data: Path, report: Path, requests: int,
                  concurrency: int = 1, max_trials: int = 5) -> dict:
    """One perf_analyzer measurement (count windows of `requests`): requests/s, p50 and p99 ms."""
    def measure(csv: Path) -> None:
        command = [str(layout.perf_analyzer), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(input_data),
                   "--concurrency-range", str(concurrency), "--measurement-mode", "count_windows",
                   "--measurement-request-count", str(requests), "-s", "50", "--max-trials", str(max_trials),
                   "-f", str(csv)]
        result = subprocess.run(command, env=layout.process_env(), capture_output=True, text=True, timeout=900)
        if result.returncode != 0 and "Failed to obtain stable measurement" in result.stdout:  # noisy cores: longer windows
            command[command.index("--measurement-request-count") + 1] = str(2 * requests)
            result = subprocess.run(command, env=layout.process_env(), capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"perf_analyzer -m {model} failed ({result.returncode}):\n"
                               f"{result.stdout[-3000:]}{result.stderr[-3000:]}")

    replace_file(report, measure)
    header, row = report.read_text().strip().splitlines()[:2]
    measured = dict(zip(header.split(","), row.split(",")))
    return {"requests_per_s": float(measured["Inferences/Second"]),
            "p50_ms": float(measured["p50 latency"]) / 1e3, "p99_ms": float(measured["p99 latency"]) / 1e3}


def server_layout(home: Path, torch_runtime: str) -> TritonLayout:
    """The Triton at `home`, refused in one line unless it has every backend this export loads."""
    layout = TritonLayout(Path(home))
    for tool in (layout.tritonserver, layout.perf_analyzer):
        if not tool.is_file():
            raise SystemExit(f"bench.serving: --triton-home {home}: expected {tool.relative_to(layout.home)} there, found none")
    # the transform and top-k steps always run in the python backend; the model step in the runtime's
    needed = list(dict.fromkeys([BACKENDS["python"], BACKENDS[torch_runtime]]))
    missing = [name for name in needed if not (layout.backend_dir / name / f"libtriton_{name}.so").is_file()]
    if missing:
        raise SystemExit(f"bench.serving: --triton-home {home}: --torch-runtime {torch_runtime} needs the backends "
                         f"{needed} in {layout.backend_dir}, missing {missing}")
    return layout


def statistics(url: str) -> dict:
    """Triton's cumulative counters per model: successful requests and ns spent in each phase."""
    import tritonclient.grpc as grpcclient

    counters = {}
    for model in grpcclient.InferenceServerClient(url).get_inference_statistics(as_json=True)["model_stats"]:
        stats = model["inference_stats"]
        counters[model["name"]] = {"requests": int(stats.get("success", {}).get("count", 0)),
                                   "total": int(stats.get("success", {}).get("ns", 0)),
                                   **{phase: int(stats.get(phase, {}).get("ns", 0)) for phase in STATS}}
    return counters


def cpu_seconds(server) -> dict[str, float]:
    """CPU seconds (user + system) so far of the server, of each model's python stubs, and of
    this process's finished children (perf_analyzer runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = {"perf_analyzer": usage.ru_utime + usage.ru_stime}
    for process in server.processes():
        name = "tritonserver" if process.model is None else f"stub {process.model}"
        found[name] = found.get(name, 0.0) + process.cpu_seconds
    return found


def cpu_per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
    """CPU ms per request of each process that worked between two `cpu_seconds` snapshots."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    return {name: round(seconds / requests * 1e3, 3) for name, seconds in spent.items() if seconds > 0}


def step_times(before: dict, after: dict) -> dict:
    """Mean ms per request of each model that served requests between two `statistics` snapshots."""
    times = {}
    for model, now in after.items():
        then = before.get(model, dict.fromkeys(now, 0))
        requests = now["requests"] - then["requests"]
        if requests:
            times[model] = {"requests": requests, **{phase: round((now[phase] - then[phase]) / requests / 1e6, 3)
                                                     for phase in ("total", *STATS)}}
    return times


def write_inputs(folder: Path, url: str, spec, repo: Path, sessions, reference: dict) -> dict:
    """perf_analyzer --input-data for the ensemble and its model and transform steps (the same sessions),
    merlin and ensemble_ascii (their ASCII-only subset)."""
    import tritonclient.grpc as grpcclient

    from bench.merlin_reference.perf_input import write_perf_input
    from examples.samples import one_session_requests, perf_entry

    folder.mkdir(parents=True, exist_ok=True)
    batches = one_session_requests(sessions, spec, K)  # every event sent: as merlin gets them
    sys.path.insert(0, str(repo / MEASURED["transform_step"] / "1"))
    from compiled import RequestTransform

    transform = RequestTransform(repo / MEASURED["transform_step"] / "1")
    model_inputs = [t["name"] for t in grpcclient.InferenceServerClient(url).get_model_metadata(MEASURED["model_step"], as_json=True)["inputs"]]
    entries = {"ensemble": [], "model_step": [], "transform_step": []}
    paths = {measured: folder / f"{measured}_{model}.json" for measured, model in MEASURED.items()}
    merlin = write_perf_input(sessions, paths["merlin"], reference["inputs"], reference["sequence_key"])
    merlin_sessions = [e[reference["sequence_key"]] for e in json.loads(paths["merlin"].read_text())["data"]]
    ascii_keys = {session["content"][0] for session in merlin_sessions}
    for batch in batches:
        raw = {name: values for name, values in batch.inputs.items() if name != contract.K}
        transformed = transform.transform({n: raw[n] for n in transform.inputs}, raw[contract.EVENT_COUNT])
        entries["ensemble"].append(perf_entry(batch.inputs))
        entries["transform_step"].append(perf_entry(raw))
        entries["model_step"].append(perf_entry({name: transformed[name] for name in model_inputs}))
    entries["ensemble_ascii"] = [entry for batch, entry in zip(batches, entries["ensemble"]) if batch.session_ids[0] in ascii_keys]
    for measured, data in entries.items():
        write_json(paths[measured], {"data": data}, indent=None)
    lengths = [int(b.inputs[contract.EVENT_COUNT][0, 0]) for b in batches]
    merlin_lengths = [session["shape"][0] for session in merlin_sessions]
    return {"paths": {measured: str(path) for measured, path in paths.items()},
            "ours": {"sessions": len(lengths), "events": sum(lengths), "median_events": float(np.median(lengths))},
            "merlin": {**merlin, "median_events": float(np.median(merlin_lengths))}}


def ratios(results: list[dict]) -> dict:
    by = {(r["step"], r["concurrency"]): r for r in results}
    concurrencies = sorted({r["concurrency"] for r in results})
    return {
        "transform_p50_ms_at_1": by[("transform_step", 1)]["p50_ms"] if ("transform_step", 1) in by else None,
        "ensemble_over_model_p50": {c: round(by[("ensemble", c)]["p50_ms"] / by[("model_step", c)]["p50_ms"], 2)
                                    for c in concurrencies},
        **{f"{ours}_over_merlin_throughput": {c: round(by[(ours, c)]["requests_per_s"] / by[("merlin", c)]["requests_per_s"], 1)
                                              for c in concurrencies if c in (1, 4)} for ours in ("ensemble", "ensemble_ascii")},
    }


def render(report: dict) -> str:
    lines = ["| step | concurrency | requests/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} {r['model']} | {r['concurrency']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} |" for r in sorted(report["results"], key=lambda r: (r["step"], r["concurrency"]))]
    inputs, found = report["inputs"], report["ratios"]
    lines += ["", f"median events per session: ensemble, model and transform steps {inputs['ours']['median_events']:g} "
              f"({inputs['ours']['sessions']} sessions), merlin and ensemble_ascii {inputs['merlin']['median_events']:g} "
              f"({inputs['merlin']['sessions']} ASCII sessions, {inputs['merlin']['skipped']} left out)",
              f"transform step p50 at concurrency 1: {found['transform_p50_ms_at_1']} ms (target <= {TARGETS['transform_p50_ms_at_1']:g})",
              f"ensemble p50 / model step p50: {found['ensemble_over_model_p50']} (target <= {TARGETS['ensemble_over_model_p50']:g})",
              f"ensemble / merlin requests/s: {found['ensemble_over_merlin_throughput']} "
              f"(target >= {TARGETS['ensemble_over_merlin_throughput']:g}); "
              f"on the same ASCII sessions, ensemble_ascii / merlin: {found['ensemble_ascii_over_merlin_throughput']}",
              "", "server side, mean ms per request (total = queue + compute):"]
    for r in report["results"]:
        parts = ", ".join(f"{model} {t['total']:.2f} (queue {t['queue']:.2f}, infer {t['compute_infer']:.2f})"
                          for model, t in r["server"].items())
        lines.append(f"  {r['step']} c={r['concurrency']}: {parts}")
    lines += ["", "CPU ms per request, by process (2 cores give 2,000 CPU ms per second to all of them):"]
    for r in report["results"]:
        spent = r["cpu_ms_per_request"]
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(spent.items(), key=lambda item: -item[1]))
        lines.append(f"  {r['step']} c={r['concurrency']}: total {sum(spent.values()):.2f} = {parts}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run directory (training output)")
    parser.add_argument("--sessions", type=int, default=300, help="held-out sessions of the run's dataset, one per request")
    parser.add_argument("--concurrency", default="1,2,4", help="perf_analyzer concurrencies, comma-separated")
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement window")
    parser.add_argument("--out", type=Path, default=Path("build/bench/serving"))
    parser.add_argument("--torch-runtime", choices=sorted(BACKENDS), default="python",
                        help="the model step's runtime (libtorch: the export's default; needs its backend in --triton-home)")
    parser.add_argument("--triton-home", type=Path, default=TritonLayout.default_home(),
                        help="the Triton to serve with, laid out as .triton/ (bin/, backends/, lib/, installed.json)")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    layout = server_layout(args.triton_home, args.torch_runtime)

    from bench.merlin_reference.build import build_repository
    from export.repository import ExportOptions, export
    from serve.server import TritonServer
    from training.held_out import held_out_sequences

    repo, merlin_repo = args.out / "repo", args.out / "merlin_repo"
    for folder in (repo, merlin_repo):  # generated here: a rerun starts from version 1 again
        shutil.rmtree(folder, ignore_errors=True)
    export(args.run, repo, ExportOptions(name=NAME, torch_runtime=args.torch_runtime, max_batch_size=64, top_k=TOP_K))
    model_pt = repo / MEASURED["model_step"] / "1" / "model.pt"
    reference = build_repository(args.run, model_pt, merlin_repo, TOP_K)  # the very same model.pt file
    results = []
    with TritonServer(repo, log_path=args.out / "server.log", layout=layout,
                      extra_args=(f"--model-repository={merlin_repo.resolve()}",)) as server:
        url = server.grpc_url
        from client.recommender import RecommenderClient

        with RecommenderClient(url, model=NAME) as client:
            spec = client.spec
        sessions = held_out_sequences(args.run, args.sessions).events
        inputs = write_inputs(args.out / "inputs", url, spec, repo, sessions, reference)
        for concurrency in concurrencies:  # all steps at one concurrency close in time: their ratios compare
            for step, model in MEASURED.items():
                before, cpu_before = statistics(url), cpu_seconds(server)
                measured = perf_analyzer(layout, url, model, Path(inputs["paths"][step]),
                                         args.out / f"perf_{step}_{concurrency}.csv", args.requests, concurrency)
                times = step_times(before, statistics(url))
                results.append({"step": step, "model": model, "concurrency": concurrency, **measured, "server": times,
                                "cpu_ms_per_request": cpu_per_request(cpu_before, cpu_seconds(server),
                                                                      times[model]["requests"])})
                print(f"{step} {model} c={concurrency}: {measured}", flush=True)
    report = {"run": str(args.run), "model_pt": str(model_pt), "torch_runtime": args.torch_runtime,
              "triton_home": str(layout.home), "requests_per_window": args.requests,
              "inputs": inputs, "results": results, "ratios": ratios(results), "targets": TARGETS}
    write_json(args.out / "serving.json", report)
    print(render(report))


if __name__ == "__main__":
    main()
