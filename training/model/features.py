"""Which prepared columns feed the model, read from the Merlin schema of a prepared folder.

Roles come from the schema's tags, read once by `training.prepare` into prepared.json: the
item-id list (the item table, shared with the output layer), other categorical lists,
continuous lists, and per-sequence context (categorical or continuous, broadcast over the
sequence). A column the model does not use is named in a warning; one it cannot use is an error.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from training.data import prepared

if TYPE_CHECKING:  # Merlin is imported only to read a schema: the model stack runs without it
    from merlin.schema import Schema

STRUCTURAL = ("sequence key", "sequence start time")  # columns that organise the rows, never features: not warned of


class FeatureError(ValueError):
    pass


@dataclass(frozen=True)
class FeatureSpec:
    item: str  # item-id list column
    item_cardinality: int  # codes 0..cardinality-1, special codes included
    categorical: dict[str, int] = field(default_factory=dict)  # list column -> cardinality
    continuous: tuple[str, ...] = ()  # list columns
    context_categorical: dict[str, int] = field(default_factory=dict)  # scalar column -> cardinality
    context_continuous: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()  # columns present but not used, with the reason warned
    history: str | None = None  # session-aware view: the item codes of the user's earlier sessions (training.model.history)

    @property
    def list_columns(self) -> tuple[str, ...]:
        return (self.item, *self.categorical, *self.continuous)

    @property
    def context_columns(self) -> tuple[str, ...]:
        return (*self.context_categorical, *self.context_continuous)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FeatureSpec:
        """The spec `to_dict` wrote (JSON lists back to tuples)."""
        tuples = {field.name for field in dataclasses.fields(cls) if field.type.startswith("tuple")}
        return cls(**{name: tuple(value) if name in tuples else value for name, value in values.items()})


def _check_prepared(prepared_dir: Path, split: str) -> Path:
    folder = Path(prepared_dir) / split
    if not (folder / "schema.pbtxt").is_file():
        raise FeatureError(f"data dir {prepared_dir}: no {split}/schema.pbtxt; run `python -m training.prepare` first")
    return folder


def read_schema(prepared_dir: Path, split: str = "train") -> Schema:
    folder = _check_prepared(prepared_dir, split)
    from merlin.schema.io.tensorflow_metadata import TensorflowMetadata

    return TensorflowMetadata.from_proto_text_file(str(folder)).to_merlin_schema()


def _cardinality(column) -> int:
    domain = column.properties.get("domain") or {}
    if "max" not in domain:
        raise FeatureError(f"categorical column {column.name!r} has no domain (max code) in the schema")
    return int(domain["max"]) + 1


def column_roles(schema: Schema, item: str, sequence_key: str) -> dict[str, dict]:
    """What each prepared column is to the model, from the schema's tags, as plain data:
    prepared.json's "features" (`feature_spec` then reads no schema and imports no Merlin)."""
    from merlin.schema import Tags

    roles = {}
    for column in schema:
        name, tags = column.name, column.tags
        if name == item:
            roles[name] = {"role": "item", "cardinality": _cardinality(column)}
        elif name == sequence_key:
            roles[name] = {"role": "ignored", "reason": "sequence key"}
        elif Tags.TIME in tags:
            roles[name] = {"role": "ignored", "reason": "sequence start time"}
        elif name == prepared.HISTORY_COLUMN:
            roles[name] = {"role": "history"}
        elif Tags.CATEGORICAL in tags:
            roles[name] = {"role": "categorical" if column.is_list else "context_categorical", "cardinality": _cardinality(column)}
        elif Tags.CONTINUOUS in tags:
            roles[name] = {"role": "continuous" if column.is_list else "context_continuous"}
        else:
            roles[name] = {"role": "unusable", "reason": f"tags {sorted(t.value for t in tags)}, list={column.is_list}"}
    return roles


def feature_spec(prepared_dir: Path, exclude: tuple[str, ...] = ()) -> FeatureSpec:
    """All usable features of a prepared folder, minus `exclude` (named columns)."""
    _check_prepared(prepared_dir, "train")
    summary = prepared.load_summary(prepared_dir)
    item = summary["item_list_column"]
    roles = summary.get("features") or column_roles(read_schema(prepared_dir), item, summary["sequence_key"])  # older folders
    unknown = sorted(set(exclude) - set(roles))
    if unknown:
        raise FeatureError(f"exclude_features: unknown column(s) {unknown}; the data has {list(roles)}")
    used = {"categorical": {}, "continuous": [], "context_categorical": {}, "context_continuous": [], "history": None}
    ignored = {}
    for name, column in roles.items():
        role = column["role"]
        if role == "item":
            continue
        if name == prepared.HISTORY_COLUMN:  # older folders recorded it as ignored
            used["history"] = None if name in exclude else name
            continue
        if name in exclude:
            ignored[name] = "excluded by the config"
        elif role == "ignored":
            if column["reason"] not in STRUCTURAL:
                ignored[name] = column["reason"]
        elif role == "unusable":
            raise FeatureError(f"column {name!r}: cannot use it ({column['reason']}); exclude it with exclude_features")
        elif "cardinality" in column:
            used[role][name] = column["cardinality"]
        else:
            used[role].append(name)
    if ignored:
        warnings.warn("not used by the model: " + ", ".join(f"{k} ({v})" for k, v in ignored.items())
                      + "; a column the model should read needs a role in prepare's --mapping", stacklevel=2)
    return FeatureSpec(
        item=item,
        item_cardinality=roles[item]["cardinality"],
        categorical=used["categorical"],
        continuous=tuple(used["continuous"]),
        context_categorical=used["context_categorical"],
        context_continuous=tuple(used["context_continuous"]),
        ignored=tuple(ignored),
        history=used["history"],
    )
