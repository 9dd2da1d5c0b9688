"""Run directory -> a new version of the Triton ensemble in a model repository.

Everything is written into a staging folder beside the repository, then published by
renames: a new model folder whole, or a new version folder into an existing model; the
steps first, the ensemble last. The ensemble's config pins the step versions exported with
it, so replacing it is the one rename that switches what is served: an export killed at any
point leaves the previous ensemble served with its own steps. One export at a time holds the
repository's lock (a file beside it), so two exports never pick the same version. Versions
of one model share its config, so a later export must produce the same configs (same
features, catalog and options; the ensemble's pinned versions aside) or use another --name.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from export import configs
from export.configs import Step, Tensor
from export.torchscript import PRECISIONS, ExportError, history_events, input_names, kept_events, trace
from export.transform_spec import compile_workflow
from model_repository import contract
from model_repository.transform.compiled import ITEM_TIMES, reads_item_times

SOURCES = Path(__file__).resolve().parent.parent / "model_repository"
PAUSE_ENV = "HF4REC_EXPORT_PAUSE_S"  # tests: seconds to sleep between staging and publishing


@dataclass(frozen=True)
class ExportOptions:
    name: str = contract.DEFAULT_NAME
    version: int | None = None  # None: one above the highest version in the repository
    max_batch_size: int = 64  # sessions per batch, per request and after dynamic batching
    top_k: int = 100  # the largest k a request may ask for
    device: str = "cpu"  # cpu | gpu: where every step's instances run (KIND_CPU / KIND_GPU)
    torch_runtime: str = "libtorch"  # libtorch (NGC tritonserver) | python (runs model.pt in the python backend)
    exclude_seen: bool | None = None  # drop the session's own items; None: the run's train.exclude_seen
    # request bounds (INVALID_ARG above them): events per request summed over its sessions, padding
    # included (None: max_batch_size x the run's max_events, the most a client that cuts sessions
    # to max_events sends), and bytes per string value (256 fits UUIDs, SKUs and most URLs)
    max_request_events: int | None = None
    max_id_bytes: int = 256
    precision: str = "fp32"  # the model step's weights and arithmetic: fp32 | bf16 | fp16 (scores out in fp32)
    # instances of each step (Triton's instance_group count): a replica's parallelism per step
    transform_instances: int = 1
    model_instances: int = 1
    topk_instances: int = 1


def _check(options: ExportOptions) -> None:
    if not options.name.replace("_", "").replace("-", "").isalnum():
        raise ExportError(f"--name: expected letters, digits, '-' or '_', got {options.name!r}")
    if options.max_batch_size < 1:
        raise ExportError(f"--max-batch-size: expected >= 1, got {options.max_batch_size}")
    if options.top_k < 1:
        raise ExportError(f"--top-k: expected >= 1, got {options.top_k}")
    if options.device not in ("cpu", "gpu"):
        raise ExportError(f"--device: expected cpu or gpu, got {options.device!r}")
    if options.torch_runtime not in configs.BACKENDS:
        raise ExportError(f"--torch-runtime: expected one of {list(configs.BACKENDS)}, got {options.torch_runtime!r}")
    for step in contract.STEPS:
        if getattr(options, f"{step}_instances") < 1:
            raise ExportError(f"--{step}-instances: expected >= 1, got {getattr(options, f'{step}_instances')}")
    if options.precision not in PRECISIONS:
        raise ExportError(f"--precision: expected one of {list(PRECISIONS)}, got {options.precision!r}")
    if options.max_request_events is not None and options.max_request_events < 1:
        raise ExportError(f"--max-request-events: expected >= 1, got {options.max_request_events}")
    if options.max_id_bytes < 1:
        raise ExportError(f"--max-id-bytes: expected >= 1, got {options.max_id_bytes}")
    if options.version is not None and options.version < 1:
        raise ExportError(f"--version: expected >= 1, got {options.version}")
    if options.device == "gpu" and not torch.cuda.is_available():
        raise ExportError("--device gpu: tracing for the GPU needs CUDA on the exporting machine; none is visible")


def _versions(folder: Path) -> list[int]:
    return [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []


def _copy_sources(step: str, files: list[str], target: Path) -> None:
    for name in files:
        shutil.copy2(SOURCES / step / name, target / name)


@contextlib.contextmanager
def _exclusive(repo: Path):
    """The repository's export lock, held until the export is published (or has failed). The file
    sits beside the repository, like the staging folders: Triton loads every folder inside it."""
    with open(repo.parent / f".{repo.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def _new_version(repo: Path, models: list[str], requested: int | None) -> int:
    """One above every version of the four models (or `requested`, when above them all: the steps
    keep only their latest versions loaded and the ensemble pins its own)."""
    highest = max((v for model in models for v in _versions(repo / model)), default=0)
    if requested is not None and requested <= highest:
        raise ExportError(f"--version {requested}: already in {repo} or below its highest version {highest}; "
                          f"expected above it (the steps keep their latest {configs.KEEP_VERSIONS} loaded)")
    return requested or highest + 1


def _pinned_version(config: Path) -> int:
    """The step version a published ensemble config names (-1, any, before versions were pinned;
    steps pinned to several versions were not written by export, and then fail the comparison)."""
    _, parsed = configs.read_config(config.read_text())
    return max(int(step.get("model_version", -1)) for step in parsed["ensemble_scheduling"]["step"])


def _publish(staging: Path, repo: Path, steps: list[str], ensemble: str, version: int) -> None:
    """Steps first, then the ensemble's version folder, and its config last: the one rename that
    moves the ensemble to the new step versions."""
    for model_name in [*steps, ensemble]:
        if (repo / model_name).is_dir():
            os.rename(staging / model_name / str(version), repo / model_name / str(version))
        else:
            os.rename(staging / model_name, repo / model_name)
    if (staging / ensemble / "config.pbtxt").exists():  # the ensemble was there before: its config pins older steps
        os.replace(staging / ensemble / "config.pbtxt", repo / ensemble / "config.pbtxt")


@dataclass(frozen=True)
class Loaded:
    """What export reads of a run."""
    run: Path
    model: torch.nn.Module  # the best weights, eval mode
    exclude_seen: bool  # the option, else the run's train.exclude_seen
    first_code: int  # codes below it are reserved (pad, null, OOV)


@dataclass(frozen=True)
class EnsembleConfigs:
    steps: dict[str, str]  # step model -> its config.pbtxt
    ensemble: Callable[[int], str]  # the ensemble's config.pbtxt, pinning the steps' version


def load(run: Path, options: ExportOptions) -> Loaded:
    from training import run_dir

    model, config = run_dir.load_model(run)
    first_code = run_dir.special_codes(run)["first_value"]
    if options.top_k > model.spec.item_cardinality - first_code:
        raise ExportError(f"--top-k: expected at most the catalog's {model.spec.item_cardinality - first_code} items, got {options.top_k}")
    exclude_seen = config.train.exclude_seen if options.exclude_seen is None else options.exclude_seen
    return Loaded(run, model, exclude_seen, first_code)


def compile_transform(loaded: Loaded) -> dict:
    """The transform step's spec (transform.json): the run's fitted workflow narrowed to the model's inputs."""
    from training import run_dir

    model = loaded.model
    return compile_workflow(loaded.run / run_dir.DATA, input_names(model), kept_events(model), loaded.exclude_seen,
                            history_events(model))


def trace_model(loaded: Loaded, transform: dict, options: ExportOptions) -> torch.jit.ScriptModule:
    """model.pt: the model's top-k best codes and scores, traced for the export's device and precision."""
    seen_width = transform["max_events"] if transform["seen"] else None  # else the model's item list is the seen set
    return trace(loaded.model, options.top_k, loaded.exclude_seen, seen_width, "cuda" if options.device == "gpu" else "cpu",
                 options.precision)


def ensemble_configs(loaded: Loaded, transform: dict, options: ExportOptions) -> EnsembleConfigs:
    """The four config.pbtxt: the ensemble reads as the data path, every name from the contract."""
    transform_step, model_step, topk_step = (contract.step_name(options.name, step) for step in contract.STEPS)
    max_request_events = options.max_request_events or options.max_batch_size * transform["max_events"]
    if max_request_events < transform["max_events"]:
        raise ExportError(f"--max-request-events: expected at least the run's max_events {transform['max_events']} "
                          f"(one whole session), got {max_request_events}")
    limits = dict(zip(contract.TRANSFORM_LIMITS, (str(max_request_events), str(options.max_id_bytes))))

    raw = [Tensor(i["name"], i["dtype"], (-1,)) for i in transform["inputs"]]
    event_count, k = Tensor(contract.EVENT_COUNT, "int32", (1,)), Tensor(contract.K, "int32", (1,))
    model_inputs = [Tensor(o["name"], o["dtype"], (-1,) if o["kind"] == "list" else (1,)) for o in transform["outputs"]]
    item_column = item_column_of(loaded, transform)
    item_dtype = next(i["dtype"] for i in transform["inputs"] if i["name"] == item_column)
    history = transform["history"]  # a session-aware model: the user's earlier events, per session
    history_parameters = {}
    if history:
        raw += [Tensor(history["inputs"]["item"], item_dtype, (-1,)), Tensor(history["inputs"]["time"], "int64", (-1,)),
                Tensor(history["inputs"]["count"], "int32", (1,))]
        model_inputs.append(Tensor(history["name"], "int64", (-1,)))
        history_parameters = {"user_column": history["user_column"], "session_gap_s": history["session_gap_s"],
                              "history_events": history["events"]}
    model_inputs += [Tensor(contract.SEEN, "int64", (-1,))] if transform["seen"] else []
    best = [Tensor(contract.MODEL_OUTPUTS[0], "int64", (options.top_k,)), Tensor(contract.MODEL_OUTPUTS[1], "float32", (options.top_k,))]
    ranked = [Tensor(contract.TOPK_OUTPUTS[0], item_dtype, (-1,)), Tensor(contract.TOPK_OUTPUTS[1], "float32", (-1,))]
    topk_inputs = [replace(best[0], name=contract.TOPK_INPUTS[0]), replace(best[1], name=contract.TOPK_INPUTS[1]), k]
    batch, kind = options.max_batch_size, "KIND_GPU" if options.device == "gpu" else "KIND_CPU"
    backend = configs.BACKENDS[options.torch_runtime]
    steps = {
        # the python transform answers each request on its own, so sessions of any length share a batch
        transform_step: configs.step_config(transform_step, "python", batch, [replace(t, ragged=True) for t in [*raw, event_count]],
                                            model_inputs, kind, limits, count=options.transform_instances),
        model_step: configs.step_config(model_step, backend, batch, model_inputs, best, kind, configs.model_parameters(backend),
                                        count=options.model_instances),
        topk_step: configs.step_config(topk_step, "python", batch, topk_inputs, ranked, kind, count=options.topk_instances),
    }
    parameters = contract.EnsembleParameters(
        sequence_key=transform["sequence_key"], time_column=transform["time_column"], item_column=item_column,
        context_columns=tuple(o["source"] for o in transform["outputs"] if o["kind"] == "context"),
        max_events=transform["max_events"], max_k=options.top_k, exclude_seen=loaded.exclude_seen,
        max_request_events=max_request_events, **history_parameters).to_config()

    def ensemble(version: int) -> str:
        return configs.ensemble_config(
            options.name, batch, version, [*raw, event_count, k],
            [Tensor(contract.OUTPUTS[0], item_dtype, (-1,)), Tensor(contract.OUTPUTS[1], "float32", (-1,))],
            [Step(transform_step, {t.name: t.name for t in [*raw, event_count]}, {t.name: t.name for t in model_inputs}),
             Step(model_step, {t.name: t.name for t in model_inputs}, dict(zip(contract.MODEL_OUTPUTS, contract.BEST))),
             Step(topk_step, dict(zip(contract.TOPK_INPUTS, (*contract.BEST, k.name))), dict(zip(contract.TOPK_OUTPUTS, contract.OUTPUTS)))],
            parameters)

    return EnsembleConfigs(steps, ensemble)


def item_column_of(loaded: Loaded, transform: dict) -> str:
    """The raw column whose values the ensemble returns (the model's item list's source)."""
    return next(o["source"] for o in transform["outputs"] if o["name"] == loaded.model.spec.item)


def stage(staging: Path, version: int, texts: dict[str, str], loaded: Loaded, transform: dict, traced, options: ExportOptions) -> dict:
    """Every model's version folder and config under `staging`; returns the manifest (export.json)."""
    from training import run_dir
    from training.data import prepared

    for model_name, text in texts.items():
        (staging / model_name / str(version)).mkdir(parents=True)
        (staging / model_name / "config.pbtxt").write_text(text)
    transform_dir, model_dir, topk_dir = (staging / contract.step_name(options.name, step) / str(version) for step in contract.STEPS)
    data = loaded.run / run_dir.DATA
    _copy_sources("transform", ["model.py", "compiled.py"], transform_dir)
    shutil.copytree(data / prepared.CATEGORIES_DIR, transform_dir / prepared.CATEGORIES_DIR)  # plain parquet; no pickle
    if reads_item_times(transform["time_features"]):  # the items' training statistics
        shutil.copy2(data / prepared.WORKFLOW_DIR / ITEM_TIMES, transform_dir / prepared.WORKFLOW_DIR / ITEM_TIMES)
    (transform_dir / "transform.json").write_text(json.dumps(transform, indent=1) + "\n")
    torch.jit.save(traced, str(model_dir / "model.pt"))
    if options.torch_runtime == "python":
        _copy_sources("runner", ["model.py"], model_dir)
    _copy_sources("topk", ["model.py", "ranking.py"], topk_dir)
    categories = prepared.category_file(transform_dir, item_column_of(loaded, transform))
    (topk_dir / "categories").mkdir()
    shutil.copy2(categories, topk_dir / "categories" / categories.name)
    (topk_dir / "topk.json").write_text(json.dumps({
        "max_k": options.top_k, "first_code": loaded.first_code, "categories": f"categories/{categories.name}"}, indent=1) + "\n")
    manifest = {"run": str(loaded.run), "version": version, "options": asdict(options), "exclude_seen": loaded.exclude_seen,
                "max_events": transform["max_events"], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (staging / options.name / str(version) / "export.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def export(run: Path, repo: Path, options: ExportOptions = ExportOptions()) -> dict:
    """load -> compile the transform -> trace -> write the configs -> stage -> publish."""
    _check(options)
    run, repo = Path(run).resolve(), Path(repo).resolve()
    loaded = load(run, options)
    transform = compile_transform(loaded)
    traced = trace_model(loaded, transform, options)
    written = ensemble_configs(loaded, transform, options)
    repo.mkdir(parents=True, exist_ok=True)
    with _exclusive(repo):
        version = _new_version(repo, [options.name, *written.steps], options.version)
        texts = {**written.steps, options.name: written.ensemble(version)}
        for model_name, text in texts.items():
            current = repo / model_name / "config.pbtxt"
            if model_name == options.name and current.is_file():  # as published, but for the steps' versions
                text = written.ensemble(_pinned_version(current))
            if current.is_file() and current.read_text() != text:
                raise ExportError(f"{current} differs from this export's config (features, catalog or options changed); "
                                  f"versions of a model share one config: export with another --name or --repo")
        staging = Path(tempfile.mkdtemp(prefix=f".{repo.name}.export-", dir=repo.parent))
        try:
            manifest = stage(staging, version, texts, loaded, transform, traced, options)
            if os.environ.get(PAUSE_ENV):
                time.sleep(float(os.environ[PAUSE_ENV]))
            _publish(staging, repo, list(written.steps), options.name, version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {"repo": str(repo), "name": options.name, "version": version, "models": list(texts), **manifest}
