"""The training config: a YAML file of sections (model, loss, task, train), overridable by
`section.key=value` arguments. Unknown sections or keys are errors before anything trains.

A file may name a `base:` file (relative to it) and state only what differs: the shipped configs
are training/configs/base.yaml, where every key is commented, plus one short file per model. A
run directory's config.yaml is the resolved whole."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Union, get_args, get_origin, get_type_hints

import yaml

from training.metrics import NAMES as METRIC_NAMES
from training.metrics import PROTOCOLS
from training.model.losses import LossConfig, check_loss
from training.model.configuration import ModelConfig
from training.model.configuration import check_config as check_model
from training.model.tasks import TaskConfig, check_task

SCHEDULES = ("cosine", "linear", "constant")  # the learning rate's decay after warmup
AMP_MODES = ("none", "bf16", "fp16")  # train.amp


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # sequences per step
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.1  # on matrices only; biases, norms and 1-D parameters take none
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW moments
    warmup_steps: int = 100  # linear warmup from 0 to lr
    schedule: str = "cosine"  # cosine | linear | constant decay after warmup
    clip_grad: float = 1.0  # max gradient norm; 0 disables
    eval_every_epochs: int = 1  # validation cadence
    early_stopping_metric: str = "ndcg@10"  # validation metric that picks the best checkpoint
    patience: int = 3  # evaluations without improvement before stopping; 0 never stops early
    ks: tuple[int, ...] = (5, 10, 20)  # cut-offs of the ranking metrics
    exclude_seen: bool = False  # drop the sequence's own items from the ranking
    eval_batch_size: int = 512  # sequences per evaluation step
    eval_protocol: str = "last"  # validation and test: last (each row's final event) | all (every next event from its prefix)
    time_budget_minutes: float | None = None  # stop training after this wall time (then evaluate)
    seed: int = 0  # weights, batch order, masking and dropout
    threads: int | None = None  # torch intra-op threads; None: torch's default
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    amp: str = "none"  # mixed precision: none | bf16 (CPU with AVX512-BF16/AMX, or GPU) | fp16 (GPU)
    bucket_by_length: bool = True  # batch sequences of similar length together (less padding), batch order shuffled
    bucket_batches: int = 8  # each shuffled run of this many batches is sorted by length (small: batches vary per epoch)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {name: _plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS}


SECTIONS = {"model": ModelConfig, "loss": LossConfig, "task": TaskConfig, "train": TrainConfig}


class ConfigError(ValueError):
    pass


def check(config: Config) -> None:
    """Every value a config can get wrong, before the data is read: a bad value is the one thing said."""
    train = config.train
    if train.schedule not in SCHEDULES:
        raise ConfigError(f"train.schedule: expected one of {list(SCHEDULES)}, got {train.schedule!r}")
    if train.eval_protocol not in PROTOCOLS:
        raise ConfigError(f"train.eval_protocol: expected one of {list(PROTOCOLS)}, got {train.eval_protocol!r}")
    metric_names = {f"{m}@{k}" for m in METRIC_NAMES for k in train.ks}
    if train.early_stopping_metric not in metric_names:
        raise ConfigError(f"train.early_stopping_metric: {train.early_stopping_metric!r} is not computed; expected one of {sorted(metric_names)}")
    if train.bucket_by_length and train.bucket_batches < 1:
        raise ConfigError(f"train.bucket_batches: expected 1 or more batches per length-sorted run, got {train.bucket_batches}")
    if train.amp not in AMP_MODES:
        raise ConfigError(f"train.amp: expected one of {list(AMP_MODES)} (fp16 on a GPU only), got {train.amp!r}")
    check_model(config.model)
    check_loss(config.loss, config.model.repeat_window)
    check_task(config.task, config.model.task, config.model.history, config.model.repeat_window)


def _plain(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
NULLS = ("null", "none", "~")
TYPE_NAMES = {bool: f"boolean ({', '.join(BOOLEANS)})", int: "integer", float: "number", str: "string"}


def _type_name(kind) -> str:
    args = get_args(kind)
    if get_origin(kind) in (Union, UnionType):
        return " or ".join("null" if arg is type(None) else _type_name(arg) for arg in args)
    if get_origin(kind) is tuple:
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        return f"list of {count}{_type_name(args[0])} values"
    return TYPE_NAMES[kind]


def _parse(value, kind):
    """`value` (a YAML value, or an override's text) as the field type `kind`; ValueError if it is not one."""
    args = get_args(kind)
    if get_origin(kind) in (Union, UnionType):  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in NULLS):
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _parse(value, inner)
    if get_origin(kind) is tuple:
        try:
            items = yaml.safe_load(value) if isinstance(value, str) else value  # an override may be "[5, 10]"
        except yaml.YAMLError:
            raise ValueError(value) from None
        items = list(items) if isinstance(items, (list, tuple)) else [items]
        if args[-1] is Ellipsis:
            return tuple(_parse(item, args[0]) for item in items)
        if len(items) != len(args):
            raise ValueError(value)
        return tuple(_parse(item, arg) for item, arg in zip(items, args))
    if kind is bool:
        if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in BOOLEANS:
            return BOOLEANS[value.strip().lower()]
    elif kind is int:
        if type(value) is int:
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            return int(value)
    elif kind is float:
        if type(value) in (int, float):
            return float(value)
        if isinstance(value, str):
            return float(value)  # YAML reads 1e-3 as text
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ValueError(value)


def build_config(values: dict, source: str = "config") -> Config:
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; expected {sorted(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        given = values.get(name) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{source}: section {name!r}: expected a mapping of keys, got {given!r}")
        kinds = get_type_hints(cls)
        bad = sorted(set(given) - set(kinds))
        if bad:
            raise ConfigError(f"{source}: unknown key(s) {[f'{name}.{k}' for k in bad]}; {name} has {sorted(kinds)}")
        parsed = {}
        for key, value in given.items():
            try:
                parsed[key] = _parse(value, kinds[key])
            except ValueError:
                raise ConfigError(f"{source}: {name}.{key}: expected {_type_name(kinds[key])}, got {value!r}") from None
        sections[name] = cls(**parsed)
    return Config(**sections)


CONFIGS = Path(__file__).resolve().parent / "configs"  # the shipped configs
BASE = CONFIGS / "base.yaml"  # what every shipped config starts from


def shipped_configs() -> list[Path]:
    """The shipped configs of a model each (the base they share is none)."""
    return sorted(path for path in CONFIGS.glob("*.yaml") if path != BASE)


def read_values(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file's sections, on top of its `base:` file's (and that one's base, ...)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" + (f" (the base of {seen[-1]})" if seen else ""))
    if path.resolve() in seen:
        raise ConfigError(f"config file {path}: its bases loop back to it ({' -> '.join(map(str, seen))})")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(values).__name__}")
    base = values.pop("base", None)
    if base is None:
        return values
    merged = read_values(path.parent / base, (*seen, path.resolve()))
    for section, given in values.items():
        if isinstance(given, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **given}
        else:
            merged[section] = given
    return merged


def load_config(path: Path | None, overrides: list[str]) -> Config:
    values: dict = {}
    if path is not None:
        values = read_values(path)
    for override in overrides:
        if "=" not in override or "." not in override.split("=", 1)[0]:
            raise ConfigError(f"override {override!r}: expected section.key=value, e.g. model.d_model=128")
        dotted, raw = override.split("=", 1)
        section, key = dotted.split(".", 1)
        values.setdefault(section, {})
        if not isinstance(values[section], dict):
            raise ConfigError(f"override {override!r}: section {section!r} is not a mapping")
        values[section][key] = raw  # the text, parsed by the field's type in build_config
    return build_config(values, source=str(path) if path else "config")
