"""The prepared-data folder: the contract between `training.prepare` and the stages after it.

    prepared.json   what was prepared (dataset, view, split, columns, sequence key, max
                    length, each column's role for the model, counts, options); `load_summary`
    transform.json  the fitted workflow's request-time part as plain data (`training.data.request_transform`)
    workflow/       the fitted NVTabular workflow, for `nvtabular.Workflow.load` on one's own data
                    (a pickle: hf4rec never loads it); categories under workflow/categories/
    <split>/        part_0.parquet + schema.pbtxt (Merlin schema; cat_path relative to the folder)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.data.codes import SPECIAL_CODES
from training.data.events import EventColumns
from training.data.parquet import read_parquet

if TYPE_CHECKING:
    from merlin.schema import Schema

SUMMARY_FILE = "prepared.json"
TRANSFORM_FILE = "transform.json"
WORKFLOW_DIR = "workflow"
CATEGORIES_DIR = os.path.join(WORKFLOW_DIR, "categories")  # the fitted categories, plain parquet
WINDOWS_DIR = "windows"
SPLIT_FILE = "part_0.parquet"
HISTORY_COLUMN = "history_item_list"  # session-aware view: items of the user's earlier sessions


def item_list_column(columns: EventColumns) -> str:
    return f"{columns.item}_list"


def with_history_column(schema: Schema, columns: EventColumns) -> Schema:
    from merlin.schema import ColumnSchema, Schema, Tags

    item = schema[item_list_column(columns)]
    history = ColumnSchema(
        HISTORY_COLUMN,
        dtype=item.dtype,
        tags=[Tags.ITEM, Tags.CATEGORICAL, Tags.LIST, Tags.CONTEXT],
        properties={k: v for k, v in item.properties.items() if k != "value_count"},
        dims=item.shape.dims,
    )
    return schema + Schema([history])


def _saved_cat_paths(schema: Schema) -> Schema:
    """Point each column's categories at the saved workflow's copy, relative to the folder's root."""
    from merlin.schema import Schema

    columns = []
    for column in schema:
        path = column.properties.get("cat_path")
        if path:
            saved = os.path.join(CATEGORIES_DIR, os.path.basename(path))
            column = column.with_properties({**column.properties, "cat_path": saved})
        columns.append(column)
    return Schema(columns)


def write_split(frame: pd.DataFrame, schema: Schema, folder: Path) -> None:
    from merlin.schema.io.tensorflow_metadata import TensorflowMetadata

    folder.mkdir(parents=True, exist_ok=True)
    frame = frame[schema.column_names]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / SPLIT_FILE)
    TensorflowMetadata.from_merlin_schema(_saved_cat_paths(schema)).to_proto_text_file(str(folder))


def split_names(prepared_dir: Path) -> list[str]:
    """The splits a prepared folder holds (train, valid, test; windows/NNNN for a time split)."""
    return sorted(str(path.parent.relative_to(prepared_dir)) for path in Path(prepared_dir).glob(f"**/{SPLIT_FILE}"))


def read_split(prepared_dir: Path, split: str) -> pd.DataFrame:
    path = Path(prepared_dir) / split / SPLIT_FILE
    if not path.is_file():
        if not Path(prepared_dir).is_dir():
            raise FileNotFoundError(f"prepared folder {prepared_dir}: expected a folder (training.prepare --out), found none")
        raise FileNotFoundError(f"split {split!r}: expected one of {split_names(prepared_dir)} in {prepared_dir}")
    return read_parquet(path)


def item_vocabulary(prepared_dir: Path) -> pd.Series:
    """Original item id of each item code (index = code, from 3; 0-2 are reserved)."""
    summary = load_summary(prepared_dir)
    return read_parquet(category_file(prepared_dir, summary["columns"]["item"]))[summary["columns"]["item"]]


def category_file(folder: Path, column: str) -> Path:
    """The fitted categories of a raw column (row = code) in a prepared folder or a transform step's."""
    return Path(folder) / CATEGORIES_DIR / f"unique.{column}.parquet"


def describe(*, dataset, view, split, columns, sequence_key, max_length, events, outputs, plan, schema, features, options) -> dict:
    item = schema[item_list_column(columns)]
    return {
        "dataset": dataset,
        "view": view,
        "split": split,
        "columns": columns.to_dict(),
        "sequence_key": sequence_key,
        "max_length": max_length,
        "item_list_column": item.name,
        "item_cardinality": int(item.properties["embedding_sizes"]["cardinality"]),
        "special_codes": SPECIAL_CODES,
        "splits": sorted(outputs),
        "windows": plan,
        "features": features,
        "counts": {
            "events": int(len(events)),
            "sequences": int(events[sequence_key].nunique()),
            "items": int(events[columns.item].nunique()),
            "users": int(events[columns.user].nunique()) if columns.user else None,
            "per_split": {name: int(len(frame)) for name, frame in outputs.items()},
        },
        "options": options,
    }


def write_summary(summary: dict, folder: Path) -> None:
    (Path(folder) / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")


def load_summary(prepared_dir: Path) -> dict:
    path = Path(prepared_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{prepared_dir} is not a prepared-data folder: {SUMMARY_FILE} not found")
    return json.loads(path.read_text())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
