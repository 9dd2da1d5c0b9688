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

from training.data import prepared
from training.data.codes import SPECIAL_CODES

_PASS_THROUGH = {"SelectionOp", "AddTags", "AddProperties", "ConcatColumns", "AddMetadata"}
SERVED_AGGREGATIONS = {"list": "list", "first": "context"}  # SequenceGroupby aggregation -> output kind


class TransformError(ValueError):
    """The workflow has a part the compiled transform cannot run; the message names it."""


def _lambda_offset(op, column: str) -> float:
    """LambdaOp is compiled only when it adds a constant (the bucket shift of training.data.workflow)."""
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


def compile_workflow(workflow, categories_dir: Path, continuous: set[str], time_features: dict | None = None,
                     history: dict | None = None) -> dict:
    """The fitted `workflow` as a `RequestTransform` spec over every output it serves (all its
    events kept); `categories_dir`: the saved workflow's categories; `continuous`: the float outputs;
    `time_features`: {"features", "timezone"} of prepare's derived time columns (not request inputs);
    `history` (session-aware view): {"source": the item column, "user_column", "session_gap_s" (0:
    sessions are a column)}: the user's earlier events become request inputs (`contract.history_inputs`),
    the last max_events of them read."""
    from model_repository.contract import history_inputs
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
        "history": None if history is None else {
            "name": prepared.HISTORY_COLUMN, "events": grouping.max_length,
            "inputs": history_inputs(history["source"], time_column), **history},
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


def _wire(values: np.ndarray, dtype: str) -> np.ndarray:
    """Raw values as a request carries them: text as utf-8 bytes, a missing value as b"" (as the client does)."""
    if dtype == "string":
        return np.array([b"" if pd.isna(v) else str(v).encode() for v in values], dtype=object)
    return values


def _rows(values: np.ndarray, row: np.ndarray, rows: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Values grouped by `row` (sorted, each row's values in order) -> [rows, longest] right-padded, counts."""
    counts = np.bincount(row, minlength=rows)
    position = np.arange(len(row)) - np.r_[0, np.cumsum(counts)[:-1]][row]
    padded = np.zeros((rows, max(int(counts.max(initial=0)), 1)), dtype=object if dtype == "string" else dtype)
    if dtype == "string":
        padded[:] = b""
    padded[row, position] = values
    return padded, counts


def session_columns(events: pd.DataFrame, spec: dict) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Events -> (sequence keys in order of first appearance, every raw input [sessions, events]
    right-padded, real events per session): one request of all of them, every event kept.
    A session-aware spec (`history`): one request row per user, its current session (`current_sessions`)
    with its history; the keys are the users."""
    if spec.get("history"):
        return current_sessions(events, spec)
    sessions, keys = pd.factorize(events[spec["sequence_key"]], sort=False)
    order = np.argsort(sessions, kind="stable")
    columns = {}
    for raw in spec["inputs"]:
        columns[raw["name"]], counts = _rows(_wire(events[raw["name"]].to_numpy()[order], raw["dtype"]), sessions[order],
                                             len(keys), raw["dtype"])
    return np.asarray(keys), columns, np.bincount(sessions, minlength=len(keys))


def current_sessions(events: pd.DataFrame, spec: dict) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Session-aware requests: per user (in order of first appearance), the current session (the one
    that starts last, ties to the later key, as the session-aware split picks the test session) and,
    as history inputs, all the user's events before it started, in file order (the transform keeps
    the last it reads, `compiled.history_order`). -> (users, raw inputs with the history inputs,
    events per current session)."""
    history, key, time = spec["history"], spec["sequence_key"], spec["time_column"]
    user = history["user_column"]
    events = events.reset_index(drop=True)
    if key not in events.columns and history["session_gap_s"]:  # sessions cut by inactivity, as prepare cut them
        from training.data.events import EventColumns
        from training.data.views import cut_sessions

        columns = EventColumns(item=history["source"], time=time, user=user)
        events = cut_sessions(events, columns, int(history["session_gap_s"]))  # keyed by views.DERIVED_SESSION, the key
    sessions = events.groupby(key, sort=False).agg(user=(user, "first"), start=(time, "min")).reset_index(names="key")
    sessions = sessions.iloc[np.lexsort((sessions["key"].to_numpy(), sessions["start"].to_numpy()))]
    current = sessions.drop_duplicates("user", keep="last").set_index("user")
    users = pd.unique(events[user])
    row_of_user = pd.Series(np.arange(len(users)), index=users)
    chosen = events[key].to_numpy() == current["key"].reindex(events[user]).to_numpy()
    session_rows = row_of_user.reindex(events[user][chosen]).to_numpy()
    order = np.argsort(session_rows, kind="stable")
    columns = {}
    for raw in spec["inputs"]:
        columns[raw["name"]], counts = _rows(_wire(events[raw["name"]].to_numpy()[chosen][order], raw["dtype"]),
                                             session_rows[order], len(users), raw["dtype"])
    starts = current["start"].reindex(events[user]).to_numpy()
    times = events[time].to_numpy().astype(np.int64)
    before = times < starts
    history_rows = row_of_user.reindex(events[user][before]).to_numpy()
    order = np.argsort(history_rows, kind="stable")  # in file order: the transform sorts and keeps the last ones
    item_dtype = next(raw["dtype"] for raw in spec["inputs"] if raw["name"] == history["source"])
    inputs = history["inputs"]
    columns[inputs["item"]], history_counts = _rows(_wire(events[history["source"]].to_numpy()[before][order], item_dtype),
                                                    history_rows[order], len(users), item_dtype)
    columns[inputs["time"]], _ = _rows(times[before][order], history_rows[order], len(users), "int64")
    columns[inputs["count"]] = history_counts.astype(np.int32)
    return np.asarray(users), columns, counts


def transform_events(prepared_dir: Path, events: pd.DataFrame, keep: int | None = None, history: bool = True,
                     spec: dict | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Raw events -> (sequence keys, every output of the workflow's request-time transform,
    events kept per session), as the served transform step computes them, with no request bound.
    keep: events kept per session instead of the workflow's last max_events (every prefix's inputs);
    history: False answers every session alone (a session-only model of session-aware data), True
    each user's current session with their history where the data has one; spec: another spec
    than the prepared folder's (export's narrowed one)."""
    from model_repository.transform.compiled import RequestTransform

    spec = spec if spec is not None else load(prepared_dir)
    spec = spec if keep is None else {**spec, "max_events": keep, "model_events": keep}
    spec = spec if history else {**spec, "history": None}
    keys, columns, counts = session_columns(events.reset_index(drop=True), spec)
    transform = RequestTransform(prepared_dir, spec=spec)
    return keys, transform.transform(columns, counts), np.minimum(counts, spec["max_events"])
