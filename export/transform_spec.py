"""The fitted workflow's request-time part, compiled to `transform.json` for the transform step.

Walks the saved NVTabular graph (Categorify, FillMedian, LogOp, Normalize, Bucketize,
LambdaOp offsets, then SequenceGroupby) and writes, per model input, the raw column it
comes from and the steps with their fitted statistics. Categories stay the workflow's own
parquet files. An op it does not know is an error: the served transform must equal
`workflow.transform`, which tests check on held-out data.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from export.torchscript import SEEN, ExportError

_PASS_THROUGH = {"SelectionOp", "AddTags", "AddProperties", "ConcatColumns", "AddMetadata"}
MAX_REQUEST_EVENTS = 100_000  # events of one session in one request; more is INVALID_ARG


def _lambda_offset(op, column: str) -> float:
    """LambdaOp is compiled only when it adds a constant (the bucket shift of training.workflow)."""
    probe = np.arange(5, dtype=np.int64)
    try:
        shifted = np.asarray(op.f(probe.copy()))
    except Exception as error:  # any failure means it is not a plain offset
        raise ExportError(f"column {column!r}: cannot compile LambdaOp ({error})") from None
    offset = shifted - probe
    if shifted.shape != probe.shape or not np.all(offset == offset[0]):
        raise ExportError(f"column {column!r}: LambdaOp is not a constant offset; the compiled transform cannot run it")
    return float(offset[0])


def _steps(op, column: str, categories_dir: Path) -> list[dict]:
    kind = type(op).__name__
    if kind in _PASS_THROUGH:
        return []
    if kind == "Categorify":
        path = categories_dir / os.path.basename(op.categories[column])
        if not path.is_file():
            raise ExportError(f"column {column!r}: categories file {path} not found in the run's workflow")
        return [{"op": "categorify", "categories": f"categories/{path.name}"}]
    if kind in ("FillMedian", "FillExactMedian"):
        return [{"op": "fill", "value": float(op.medians[column])}]
    if kind == "LogOp":
        return [{"op": "log1p"}]
    if kind in ("Normalize", "ExactNormalize"):
        return [{"op": "normalize", "mean": float(op.means[column]), "std": float(op.stds[column])}]
    if kind == "Bucketize":
        return [{"op": "bucketize", "boundaries": [float(b) for b in op.boundaries(column)]}]
    if kind == "LambdaOp":
        return [{"op": "add", "value": _lambda_offset(op, column)}]
    raise ExportError(f"column {column!r}: workflow op {kind} has no compiled serving form")



def compile_workflow(workflow_dir: Path, model_inputs: list[str], continuous: set[str], kept_events: int, oov_code: int,
                     seen_items: bool = False) -> dict:
    """`model_inputs`: the model's input columns (prepared names, the item list first);
    `continuous`: those that are float features; `kept_events`: events per session the model
    reads; `seen_items`: the model leaves out the session's items, so when the workflow keeps
    more events than the model reads, also output the codes of all its items (SEEN)."""
    import nvtabular as nvt
    from merlin.dag import postorder_iter_nodes

    workflow = nvt.Workflow.load(str(workflow_dir))
    chains: dict[str, list[dict]] = {}
    grouping = None
    for node in postorder_iter_nodes(workflow.output_node):
        if type(node.op).__name__ == "SequenceGroupby":
            grouping = node.op
            continue
        for column in node.output_columns.names:
            steps = _steps(node.op, column, Path(workflow_dir) / "categories")
            if steps:
                chains.setdefault(column, []).extend(steps)
    if grouping is None:
        raise ExportError(f"{workflow_dir}: no SequenceGroupby in the workflow; it does not build sequences")
    sep = grouping.name_sep
    aggregations = {col: set(grouping.list_aggs.get(col, [])) | {a for a in grouping.conv_aggs.get(col, []) if a is not list}
                    for col in {*grouping.list_aggs, *grouping.conv_aggs}}
    sources = {f"{col}{sep}{agg}": (col, agg) for col, aggs in aggregations.items() for agg in aggs}
    outputs = []
    for name in model_inputs:
        if name not in sources:
            raise ExportError(f"model input {name!r} is not an output of the workflow (it has {sorted(sources)})")
        column, agg = sources[name]
        if agg not in ("list", "first"):
            raise ExportError(f"model input {name!r}: aggregation {agg!r} has no compiled serving form")
        outputs.append({
            "name": name,
            "source": column,
            "kind": "list" if agg == "list" else "context",
            "dtype": "float32" if name in continuous else "int64",
            "steps": chains.get(column, []),
        })
    (time_column,) = grouping.sort_cols
    raw = sorted({output["source"] for output in outputs} | {time_column})
    dtypes = {column.name: column.dtype.to_numpy for column in workflow.input_schema}
    float_sources = {o["source"] for o in outputs if o["dtype"] == "float32"}
    return {
        "sequence_key": grouping.groupby_cols[0],
        "time_column": time_column,
        "max_events": grouping.max_length,
        "model_events": min(grouping.max_length, kept_events),
        "seen": {"name": SEEN, "source": outputs[0]["source"]} if seen_items and kept_events < grouping.max_length else None,
        "max_request_events": MAX_REQUEST_EVENTS,
        "oov_code": oov_code,
        "inputs": [{"name": column, "dtype": _raw_dtype(np.dtype(dtypes[column]), column, column in float_sources)}
                   for column in raw],
        "outputs": outputs,
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
    raise ExportError(f"raw column {column!r}: dtype {dtype} cannot be sent to the server")
