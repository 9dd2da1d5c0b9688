"""The run directory: the contract between training and export.

    config.yaml               the resolved config (every section, every key)
    features.json             the model's feature spec and the reserved codes: loading a run reads no schema
    run.json                  the prepared data folder it trained on
    data/                     that folder's prepared.json, transform.json, workflow/ and schema.pbtxt: what export needs
    model.safetensors         the best weights (by the early-stopping metric)
    checkpoint.pt             the last state to resume from, one file so weights and optimizer never mismatch:
                              weights, optimizer, scheduler, epoch, step, RNG states, budget spent, history
    metrics.csv, metrics.json, tensorboard/, curves.png
Files are written to a temporary name and renamed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from training.data import prepared
from training.data.codes import SPECIAL_CODES
from training.config import Config, build_config
from training.files import replace_file, replace_json
from training.model.features import FeatureSpec, feature_spec

CONFIG = "config.yaml"
FEATURES = "features.json"
RUN = "run.json"
DATA = "data"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.pt"


def create(run: Path, data: Path, config: Config, spec: FeatureSpec) -> None:
    run.mkdir(parents=True, exist_ok=True)
    replace_file(run / CONFIG, lambda p: p.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False)))
    replace_json(run / FEATURES, {"spec": spec.to_dict(), "special_codes": SPECIAL_CODES})
    replace_file(run / RUN, lambda p: p.write_text(json.dumps({"data_dir": str(Path(data).resolve())}, indent=1) + "\n"))
    staging = run / f".{DATA}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shutil.copy2(Path(data) / prepared.SUMMARY_FILE, staging / prepared.SUMMARY_FILE)
    if (Path(data) / prepared.TRANSFORM_FILE).is_file():  # older prepared folders lack it: export then says so
        shutil.copy2(Path(data) / prepared.TRANSFORM_FILE, staging / prepared.TRANSFORM_FILE)
    shutil.copytree(Path(data) / prepared.WORKFLOW_DIR, staging / prepared.WORKFLOW_DIR)
    (staging / "train").mkdir()
    shutil.copy2(Path(data) / "train" / "schema.pbtxt", staging / "train" / "schema.pbtxt")
    shutil.rmtree(run / DATA, ignore_errors=True)
    staging.rename(run / DATA)


def data_dir(run: Path) -> Path:
    path = Path(run) / RUN
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a run directory: {RUN} not found")
    return Path(json.loads(path.read_text())["data_dir"])


def load_config(run: Path) -> Config:
    path = Path(run) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a run directory: {CONFIG} not found")
    return build_config(yaml.safe_load(path.read_text()), source=str(path))


def _cpu_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: Path) -> None:
    tensors = _cpu_weights(model)
    replace_file(path, lambda p: save_file(tensors, str(p)))


def save_checkpoint(run: Path, model, state: dict) -> None:
    """Weights and training state in one file, renamed once: a crash leaves the previous pair whole."""
    checkpoint = {"model": _cpu_weights(model), "state": state}
    replace_file(Path(run) / CHECKPOINT, lambda p: torch.save(checkpoint, p))


def load_checkpoint(run: Path, model) -> dict:
    """Load the checkpoint's weights into `model`; returns its training state (tensors and plain values only)."""
    path = Path(run) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume: {path} not found")
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    model.load_state_dict(checkpoint["model"])
    return checkpoint["state"]


def special_codes(run: Path) -> dict[str, int]:
    """The reserved codes the run trained with (runs before features.json: its prepared folder's)."""
    path = Path(run) / FEATURES
    return json.loads(path.read_text())["special_codes"] if path.is_file() else prepared.load_summary(Path(run) / DATA)["special_codes"]


def spec_of(run: Path, config: Config) -> FeatureSpec:
    """The feature spec the run trained with (runs before features.json: read from its prepared.json)."""
    path = Path(run) / FEATURES
    if path.is_file():
        return FeatureSpec.from_dict(json.loads(path.read_text())["spec"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return feature_spec(Path(run) / DATA, config.model.exclude_features)


def load_model(run: Path):
    """The best weights of a run, ready for inference (eval mode)."""
    from training.model.next_item import NextItemModel

    config = load_config(run)
    weights = Path(run) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{run}: no {WEIGHTS}; the run has not finished an evaluation")
    state = load_file(str(weights))
    pretrained = state.get("inputs.pretrained.0.weight")  # the vectors travel in the weights, not the file
    model = NextItemModel(spec_of(run, config), config.model, pretrained)
    model.load_state_dict(state)
    return model.eval(), config
