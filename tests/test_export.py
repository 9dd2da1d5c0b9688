"""`python -m export`: the compiled transform equals `workflow.transform`, the two model-step
variants differ only in their backend line, versions are added atomically (a second export
serves, the first still loads, a killed export leaves the repository loadable)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import nvtabular as nvt
import pandas as pd
import pytest
import torch

from client.recommender import RecommenderClient
from export.repository import PAUSE_ENV, ExportError, ExportOptions, export
from export.torchscript import SEEN
from serve.server import TritonServer
from tests.conftest import PYTHON, ROOT
from training import run_dir
from training.data.datasets import synthetic
from training.data.events import validate_events
from training.prepare import raw_events
from training.recommend import recommend
from training.data.views import held_out

SYNTH = dict(name="synth", torch_runtime="python", max_batch_size=16, top_k=20)


def _compiled_transform(folder):
    sys.path.insert(0, str(folder))
    try:
        from compiled import RequestTransform
    finally:
        sys.path.remove(str(folder))
    return RequestTransform(folder)


def _padded(events: pd.DataFrame, key: str, transform) -> tuple[list, dict, np.ndarray]:
    groups = [group for _, group in events.groupby(key, sort=False)]
    width = max(len(group) for group in groups)
    columns = {}
    for name, dtype in transform.inputs.items():
        values = np.zeros((len(groups), width), dtype=object if dtype == "string" else dtype)
        for row, group in enumerate(groups):
            raw = group[name].to_numpy()
            values[row, : len(raw)] = [v.encode() for v in raw] if dtype == "string" else raw
        columns[name] = values
    return [g[key].iloc[0] for g in groups], columns, np.array([len(g) for g in groups])


def _assert_transform_equals_workflow(run, repo, name, events):
    folder = next((repo / f"{name}_transform").glob("[0-9]*"))
    transform = _compiled_transform(folder)
    key = transform.spec["sequence_key"]
    keys, columns, counts = _padded(events, key, transform)
    served = transform.transform(columns, counts)
    offline = nvt.Workflow.load(str(run / run_dir.DATA / "workflow")).transform(events.reset_index(drop=True)).set_index(key)
    model_events = transform.model_events
    for output in transform.outputs:
        for row, session in enumerate(keys):
            want = offline.at[session, output["name"]]
            if output["kind"] == "list":
                want = np.asarray(want)[-model_events:]
                got = served[output["name"]][row]
                assert len(got) == model_events, f"{output['name']}: expected every session padded to {model_events}"
                np.testing.assert_array_equal(got[: len(want)], want, err_msg=f"{output['name']} of {session}")
                assert not got[len(want):].any(), f"{output['name']} of {session}: padding is not 0"
            else:
                assert served[output["name"]][row, 0] == pytest.approx(want, abs=0), f"{output['name']} of {session}"
    if transform.seen:  # the top-k step's seen items: every item the workflow keeps, not only the model's
        item = transform.outputs[0]["name"]
        for row, session in enumerate(keys):
            want = np.asarray(offline.at[session, item])
            np.testing.assert_array_equal(served[SEEN][row][: len(want)], want, err_msg=f"seen items of {session}")
            assert not served[SEEN][row][len(want):].any()
    assert len(keys) >= 200


def test_compiled_transform_equals_the_workflow_on_held_out_ml1m_sessions(ml1m_run, prepared_ml1m, tmp_path):
    export(ml1m_run, tmp_path / "repo", ExportOptions(name="ml1m", torch_runtime="python"))
    events, _ = held_out(raw_events(prepared_ml1m)[0], "user_id", "timestamp", 220, seed=5)
    _assert_transform_equals_workflow(ml1m_run, tmp_path / "repo", "ml1m", events)


def test_compiled_transform_equals_the_workflow_with_prices_missing_and_unknown_items(synthetic_runs, tmp_path):
    export(synthetic_runs[0], tmp_path / "repo", ExportOptions(**SYNTH, exclude_seen=True))
    events = validate_events(synthetic.generate_events(synthetic.SyntheticConfig(n_events=20_000, seed=11)),
                             synthetic.COLUMNS, "synthetic")
    events = events[events["session_id"].isin(events["session_id"].drop_duplicates().head(240))].copy()
    rng = np.random.default_rng(0)
    events.loc[rng.random(len(events)) < 0.1, "price"] = np.nan
    events.loc[rng.random(len(events)) < 0.05, "item_id"] = 1  # not in the catalog: OOV
    _assert_transform_equals_workflow(synthetic_runs[0], tmp_path / "repo", "synth", events)


def test_libtorch_and_python_model_steps_differ_only_in_the_backend_line(ml1m_run, tmp_path):
    """...and in INTER_OP_THREAD_COUNT: libtorch r24.10 sets it on every model load, which torch allows
    once per process (a second model or version aborts the server); the runner sets it per stub."""
    for runtime in ("libtorch", "python"):
        export(ml1m_run, tmp_path / runtime, ExportOptions(name="ml1m", torch_runtime=runtime))
    libtorch = (tmp_path / "libtorch" / "ml1m_model" / "config.pbtxt").read_text().splitlines()
    python = (tmp_path / "python" / "ml1m_model" / "config.pbtxt").read_text().splitlines()
    inter_op = 'parameters { key: "INTER_OP_THREAD_COUNT" value: { string_value: "1" } }'
    assert inter_op in python and not any("INTER_OP_THREAD_COUNT" in line for line in libtorch)
    python.remove(inter_op)
    differing = [(a, b) for a, b in zip(libtorch, python) if a != b]
    assert len(libtorch) == len(python) and differing == [('backend: "pytorch"', 'backend: "python"')]
    for step in ("ml1m", "ml1m_transform", "ml1m_topk"):
        assert (tmp_path / "libtorch" / step / "config.pbtxt").read_text() == (tmp_path / "python" / step / "config.pbtxt").read_text()
    assert sorted(p.name for p in (tmp_path / "libtorch" / "ml1m_model" / "1").iterdir()) == ["model.pt"]
    assert sorted(p.name for p in (tmp_path / "python" / "ml1m_model" / "1").iterdir()) == ["model.pt", "model.py"]
    assert 'parameters { key: "INTRA_OP_THREAD_COUNT" value: { string_value: "1" } }' in libtorch


def test_model_pt_ranks_a_session_the_same_alone_padded_or_batched_with_longer_ones(ml1m_run, tmp_path):
    """The transform pads every session to the kept events so requests batch; model.pt trims
    the padding all rows share, and a row's best items never depend on its neighbours' lengths."""
    export(ml1m_run, tmp_path / "repo", ExportOptions(name="ml1m", torch_runtime="python", top_k=30))
    scripted = torch.jit.load(str(tmp_path / "repo" / "ml1m_model" / "1" / "model.pt"))
    spec = json.loads((tmp_path / "repo" / "ml1m_transform" / "1" / "transform.json").read_text())
    assert spec["seen"], "ml1m_run keeps 50 of the workflow's 200 events: the seen items come as their own input"
    model, _ = run_dir.load_model(ml1m_run)
    from export.torchscript import example_inputs, kept_events

    kept = kept_events(model)
    lengths = [3, 1, kept, 17]
    batch = example_inputs(model, lengths, torch.Generator().manual_seed(3), width=kept, seen_width=spec["max_events"])
    assert "trim_padding" in scripted.code, "model.pt must cut the padding the transform adds"
    with torch.no_grad():
        codes, scores = scripted(*batch)
        assert codes.shape == scores.shape == (4, 30) and codes.dtype == torch.int64 and scores.dtype == torch.float32
        for row, length in enumerate(lengths):
            row_inputs = [value[row: row + 1] for value in batch]
            tight = [value[:, :length] if value.shape[1] == kept else value for value in row_inputs]
            for alone_codes, alone_scores in (scripted(*row_inputs), scripted(*tight)):
                assert torch.equal(alone_codes, codes[row: row + 1])
                torch.testing.assert_close(alone_scores, scores[row: row + 1], atol=1e-5, rtol=1e-5)
            assert not set(alone_codes[0].tolist()) & set(batch[-1][row].tolist()), "a seen item was recommended"


def test_best_items_breaks_ties_to_the_lower_code_as_a_stable_full_sort_does():
    from export.torchscript import best_items

    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (64, 50), generator=generator).float()  # many ties, also at the k-th place
    scores[:, :3] = float("-inf")
    scores[5, 3:] = float("-inf")  # a row with fewer finite scores than k: -inf ties fill it, lowest codes first
    distinct = torch.randn(16, 1000, generator=generator)
    for table in (scores, distinct):
        for k in (1, 7, 20):
            for chunk in (8, 32768):  # two stages over chunks of 8 items (where k fits), one stage
                codes, values = best_items(table, k, chunk)
                order = torch.sort(-table, dim=1, stable=True).indices[:, :k]  # best first, ties: lower code
                assert torch.equal(codes, order) and torch.equal(values, torch.gather(table, 1, order)), (k, chunk)


def test_a_bf16_model_step_ranks_like_the_fp32_one(ml1m_run, tmp_path):
    export(ml1m_run, tmp_path / "fp32", ExportOptions(name="ml1m", torch_runtime="python", top_k=20))
    export(ml1m_run, tmp_path / "bf16", ExportOptions(name="ml1m", torch_runtime="python", top_k=20, precision="bf16"))
    models = {p: torch.jit.load(str(tmp_path / p / "ml1m_model" / "1" / "model.pt")) for p in ("fp32", "bf16")}
    assert {t.dtype for t in models["bf16"].parameters() if t.is_floating_point()} == {torch.bfloat16}
    model, _ = run_dir.load_model(ml1m_run)
    from export.torchscript import example_inputs, kept_events

    inputs = example_inputs(model, [20, 5, 40, 1] * 8, torch.Generator().manual_seed(1), width=kept_events(model), seen_width=200)
    with torch.no_grad():
        (codes32, scores32), (codes16, scores16) = models["fp32"](*inputs), models["bf16"](*inputs)
    overlap = np.mean([len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10 for a, b in zip(codes32, codes16)])
    assert overlap >= 0.8, f"bf16 keeps {overlap:.0%} of the fp32 top 10"
    assert torch.allclose(scores16[:, 0], scores32[:, 0], atol=0.1, rtol=0.05)
    differing = [a for a, b in zip((tmp_path / "fp32" / "ml1m_model" / "config.pbtxt").read_text().splitlines(),
                                   (tmp_path / "bf16" / "ml1m_model" / "config.pbtxt").read_text().splitlines()) if a != b]
    assert differing == [], "precision lives in model.pt, not in the step's config"


def _staged_export(repo) -> list:
    return [p for p in repo.parent.glob(f".{repo.name}.export-*") if (p / "synth").exists()]


def test_second_export_serves_first_still_loads_and_a_killed_export_changes_nothing(synthetic_runs, tmp_path):
    repo = tmp_path / "repo"
    assert export(synthetic_runs[0], repo, ExportOptions(**SYNTH))["version"] == 1
    assert export(synthetic_runs[1], repo, ExportOptions(**SYNTH))["version"] == 2
    before = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    command = [PYTHON, "-m", "export", "--run", str(synthetic_runs[0]), "--repo", str(repo), "--name", "synth",
               "--torch-runtime", "python", "--max-batch-size", "16", "--top-k", "20"]
    killed = subprocess.Popen(command, cwd=ROOT, env={**os.environ, PAUSE_ENV: "300"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any((staged / "synth" / "3" / "export.json").exists() for staged in _staged_export(repo)):
        assert killed.poll() is None and time.monotonic() < deadline, "the export never reached its pause"
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == before

    events = validate_events(synthetic.generate_events(synthetic.SyntheticConfig(n_events=3_000, seed=12)),
                             synthetic.COLUMNS, "synthetic")
    sessions, _ = held_out(events, "session_id", "timestamp", 20, seed=0)
    expected = recommend(synthetic_runs[1], sessions, 5, exclude_seen=False)
    with TritonServer(repo, log_path=tmp_path / "server.log") as server:
        with RecommenderClient(server.grpc_url, model="synth") as client:
            answers = client.recommend(sessions, k=5)
        assert {s: a.item_ids for s, a in answers.items()} == {s: ids for s, (ids, _) in expected.items()}
        import tritonclient.grpc as grpcclient

        triton = grpcclient.InferenceServerClient(server.grpc_url)
        for step in ("synth_transform", "synth_model", "synth_topk"):
            assert triton.is_model_ready(step, "1") and triton.is_model_ready(step, "2"), step
            assert not triton.is_model_ready(step, "3"), step


def test_export_refuses_a_changed_config_the_source_folder_and_a_missing_gpu(ml1m_run, synthetic_runs, tmp_path):
    export(synthetic_runs[0], tmp_path / "repo", ExportOptions(**SYNTH))
    with pytest.raises(ExportError, match="differs from this export's config"):
        export(synthetic_runs[0], tmp_path / "repo", ExportOptions(**{**SYNTH, "top_k": 7}))
    with pytest.raises(ExportError, match="--precision: expected one of .*, got 'int8'"):
        export(synthetic_runs[0], tmp_path / "other", ExportOptions(**{**SYNTH, "precision": "int8"}))
    with pytest.raises(ExportError, match="--version 1: already in"):
        export(synthetic_runs[0], tmp_path / "repo", ExportOptions(**{**SYNTH, "version": 1}))
    result = subprocess.run([PYTHON, "-m", "export", "--run", str(ml1m_run), "--repo", "model_repository"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "holds the python model sources" in result.stderr
    if not torch.cuda.is_available():
        with pytest.raises(ExportError, match="--device gpu: .*CUDA"):
            export(ml1m_run, tmp_path / "gpu", ExportOptions(device="gpu"))
    assert not json.loads((next((tmp_path / "repo" / "synth").glob("1")) / "export.json").read_text())["exclude_seen"]


def test_instance_counts_per_step_and_held_out_samples_for_the_client_and_perf_analyzer(synthetic_runs, tmp_path):
    repo, samples = tmp_path / "repo", tmp_path / "samples"
    result = subprocess.run([PYTHON, "-m", "export", "--run", str(synthetic_runs[0]), "--repo", str(repo), "--name", "synth",
                             "--torch-runtime", "python", "--transform-instances", "2", "--topk-instances", "3"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    counts = {step: (repo / f"synth_{step}" / "config.pbtxt").read_text() for step in ("transform", "model", "topk")}
    assert {step: text.count("instance_group [ { count: ") for step, text in counts.items()} == dict.fromkeys(counts, 1)
    assert [f"count: {n} kind: KIND_CPU" in counts[step] for step, n in (("transform", 2), ("model", 1), ("topk", 3))] == [True] * 3
    with pytest.raises(ExportError, match="--model-instances: expected >= 1, got 0"):
        export(synthetic_runs[0], tmp_path / "other", ExportOptions(**{**SYNTH, "model_instances": 0}))

    made = subprocess.run([PYTHON, "-m", "examples.samples", "--run", str(synthetic_runs[0]), "--repo", str(repo),
                           "--name", "synth", "--sessions", "12", "--k", "4", "--out", str(samples)],
                          cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    events = pd.read_csv(samples / "held_out_events.csv")
    perf = json.loads((samples / "perf_input.json").read_text())["data"]
    assert events["session_id"].nunique() == len(perf) >= 10 and not list(samples.glob(".*"))
    assert [entry["event_count"]["content"] for entry in perf] == [[n] for n in events.groupby("session_id", sort=False).size()]
    assert all(entry["k"]["content"] == [4] and entry["item_id"]["shape"] == entry["event_count"]["content"] for entry in perf)
    with TritonServer(repo, log_path=tmp_path / "server.log") as server:
        steps = sorted(process.model for process in server.processes() if process.model is not None)
        assert steps == ["synth_model", *["synth_topk"] * 3, *["synth_transform"] * 2]
        answer = subprocess.run([PYTHON, "-m", "client", "--url", server.grpc_url, "--input", str(samples / "held_out_events.csv"),
                                 "--model", "synth", "--k", "4", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr
    expected = recommend(synthetic_runs[0], events, 4, exclude_seen=False)
    assert {str(s): [a["item_id"] for a in items] for s, items in json.loads(answer.stdout).items()} == \
        {str(s): [int(i) for i in ids] for s, (ids, _) in expected.items()}


def test_device_gpu_puts_every_step_on_the_gpu(ml1m_run, tmp_path, monkeypatch):
    """The configs a GPU export writes (traced on the CPU here: this machine has no CUDA)."""
    import export.repository as repository

    traced_on, trace = [], repository.trace

    def trace_on_cpu(*args):
        traced_on.append(args[4])
        return trace(*args[:4], "cpu", *args[5:])

    monkeypatch.setattr(repository.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(repository, "trace", trace_on_cpu)
    export(ml1m_run, tmp_path / "repo", ExportOptions(name="ml1m", device="gpu", model_instances=2))
    assert traced_on == ["cuda"]
    for step, count in (("transform", 1), ("model", 2), ("topk", 1)):
        text = (tmp_path / "repo" / f"ml1m_{step}" / "config.pbtxt").read_text()
        assert f"instance_group [ {{ count: {count} kind: KIND_GPU }} ]" in text and "KIND_CPU" not in text, step
