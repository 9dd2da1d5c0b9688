"""The fitted workflow's request-time part as plain data: `transform.json` of a prepared folder.

`training.prepare` walks the fitted NVTabular graph once (Categorify, FillMedian, LogOp,
Normalize, Bucketize, LambdaOp offsets, then SequenceGroupby) and writes, per workflow
output, the raw column it comes from and the steps with their fitted statistics; categories
stay the workflow's parquet files. Export, evaluation and offline recommendation read these
files, never the pickled workflow: a run folder from elsewhere runs no code of its author's.
`model_repository/transform/compiled.RequestTransform` runs the spec (export narrows it to
the model's inputs: `export.transform_spec`). An op it does not know is an error.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from training import prepared
from training.codes import SPECIAL_CODES

_PASS_THROUGH = {"SelectionOp", "AddTags", "AddProperties", "ConcatColumns", "AddMetadata"}
SERVED_AGGREGATIONS = {"list": "list", "first": "context"}  # SequenceGroupby aggregation -> output kind


class TransformError(ValueError):
    """The workflow has a part the compiled transform cannot run; the message names it."""


def _lambda_offset(op, column: str) -> float:
    """LambdaOp is compiled only when it adds a constant (the bucket shift of training.workflow)."""
    probe = np.arange(5, dtype=np.int64)
    try:
        shifted = np.asarray(op.f(probe.copy()))
    except Exception as error:  # any failure means it is not a plain offset
        raise TransformError(f"column {column!r}: cannot compile LambdaOp ({error})") from None
    offset = shifted - probe
    if shifted.shape != probe.shape or not np.all(offset == offset[0]):
        raise TransformError(f"column {column!r}: LambdaOp is not a constant offset; the compiled transform cannot run it")
    return float(offset[0])


def _steps(op, column: str, categories_dir: Path) -> list[dict]:
    from nvtabular.ops import Bucketize, Categorify, FillMedian, LambdaOp, LogOp, Normalize

    if type(op).__name__ in _PASS_THROUGH:
        return []
    if isinstance(op, Categorify):
        path = categories_dir / os.path.basename(op.categories[column])
        if not path.is_file():
            raise TransformError(f"column {column!r}: categories file {path} not found in the saved workflow")
        return [{"op": "categorify", "categories": f"categories/{path.name}"}]
    if isinstance(op, FillMedian):
        return [{"op": "fill", "value": float(op.medians[column])}]
    if isinstance(op, LogOp):
        return [{"op": "log1p"}]
    if isinstance(op, Normalize):
        return [{"op": "normalize", "mean": float(op.means[column]), "std": float(op.stds[column])}]
    if isinstance(op, Bucketize):
        return [{"op": "bucketize", "boundaries": [float(b) for b in op.boundaries(column)]}]
    if isinstance(op, LambdaOp):
        return [{"op": "add", "value": _lambda_offset(op, column)}]
    raise TransformError(f"column {column!r}: workflow op {type(op).__name__} has no compiled serving form")


def compile_workflow(workflow, categories_dir: Path, continuous: set[str], time_features: dict | None = None) -> dict:
    """The fitted `workflow` as a `RequestTransform` spec over every output it serves (all its
    events kept); `categories_dir`: the saved workflow's categories; `continuous`: the float outputs;
    `time_features`: {"features", "timezone"} of prepare's derived time columns (not request inputs)."""
    from model_repository.transform.compiled import TIME_FEATURES

    from merlin.dag import postorder_iter_nodes

    chains: dict[str, list[dict]] = {}
    grouping = None
    for node in postorder_iter_nodes(workflow.output_node):
        if type(node.op).__name__ == "SequenceGroupby":
            grouping = node.op
            continue
        for column in node.output_columns.names:
            chains.setdefault(column, []).extend(_steps(node.op, column, Path(categories_dir)))
    if grouping is None:
        raise TransformError("no SequenceGroupby in the workflow; it does not build sequences")
    aggregations = {col: set(grouping.list_aggs.get(col, [])) | {a for a in grouping.conv_aggs.get(col, []) if a is not list}
                    for col in {*grouping.list_aggs, *grouping.conv_aggs}}
    outputs = [
        {"name": f"{column}{grouping.name_sep}{agg}", "source": column, "kind": SERVED_AGGREGATIONS[agg],
         "dtype": "float32" if f"{column}{grouping.name_sep}{agg}" in continuous else "int64", "steps": chains.get(column, [])}
        for column, aggs in sorted(aggregations.items()) for agg in sorted(aggs) if agg in SERVED_AGGREGATIONS
    ]
    (time_column,) = grouping.sort_cols
    dtypes = {column.name: column.dtype.to_numpy for column in workflow.input_schema}
    float_sources = {o["source"] for o in outputs if o["dtype"] == "float32"}
    time_features = time_features or {"features": [], "timezone": "UTC"}
    derived = {column for feature in time_features["features"] for column in TIME_FEATURES[feature]}
    raw = sorted(({output["source"] for output in outputs} | {time_column}) - derived)
    return {
        "sequence_key": grouping.groupby_cols[0],
        "time_column": time_column,
        "max_events": grouping.max_length,
        "model_events": grouping.max_length,
        "seen": None,
        "oov_code": SPECIAL_CODES["oov"],
        "inputs": [{"name": column, "dtype": _raw_dtype(np.dtype(dtypes[column]), column, column in float_sources)}
                   for column in raw],
        "outputs": outputs,
        "time_features": time_features,
    }


def _raw_dtype(dtype: np.dtype, column: str, is_continuous: bool) -> str:
    """The wire dtype of a raw column: text, integers (ids, unix seconds) or float64."""
    if is_continuous:
        return "float64"
    if dtype.kind in "OSU":
        return "string"
    if dtype.kind in "iub":
        return "int64"
    if dtype.kind == "f":
        return "float64"
    raise TransformError(f"raw column {column!r}: dtype {dtype} cannot be sent to the server")


def write(spec: dict, prepared_dir: Path) -> None:
    (Path(prepared_dir) / prepared.TRANSFORM_FILE).write_text(json.dumps(spec, indent=1) + "\n")


def load(prepared_dir: Path) -> dict:
    path = Path(prepared_dir) / prepared.TRANSFORM_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{prepared_dir}: no {prepared.TRANSFORM_FILE} (the workflow's request-time transform as "
                                "plain data); prepare the data again with this version of training.prepare")
    return json.loads(path.read_text())


def session_columns(events: pd.DataFrame, spec: dict) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Events -> (sequence keys in order of first appearance, every raw input [sessions, events]
    right-padded, real events per session): one request of all of them, every event kept."""
    sessions, keys = pd.factorize(events[spec["sequence_key"]], sort=False)
    order = np.argsort(sessions, kind="stable")
    counts = np.bincount(sessions, minlength=len(keys))
    position = np.arange(len(order)) - np.r_[0, np.cumsum(counts)[:-1]][sessions[order]]
    columns = {}
    for raw in spec["inputs"]:
        values = events[raw["name"]].to_numpy()[order]
        if raw["dtype"] == "string":  # requests carry text as utf-8 bytes, a missing value as b"" (as the client does)
            values = np.array([b"" if pd.isna(v) else str(v).encode() for v in values], dtype=object)
        padded = np.zeros((len(keys), int(counts.max())), dtype=object if raw["dtype"] == "string" else raw["dtype"])
        padded[sessions[order], position] = values
        columns[raw["name"]] = padded
    return np.asarray(keys), columns, counts


def transform_events(prepared_dir: Path, events: pd.DataFrame, keep: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Raw events -> (sequence keys, every output of the workflow's request-time transform,
    events kept per session), as the served transform step computes them, with no request bound.
    keep: events kept per session instead of the workflow's last max_events (every prefix's inputs)."""
    from model_repository.transform.compiled import RequestTransform

    spec = load(prepared_dir)
    spec = spec if keep is None else {**spec, "max_events": keep, "model_events": keep}
    keys, columns, counts = session_columns(events.reset_index(drop=True), spec)
    transform = RequestTransform(prepared_dir, spec=spec)
    return keys, transform.transform(columns, counts), np.minimum(counts, spec["max_events"])
