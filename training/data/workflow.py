"""The NVTabular workflow: raw events in, one row per sequence out (item codes, features, context).

Per event: Categorify item ids and categorical features (codes 0 pad, 1 null, 2
out-of-vocabulary, real values from 3: `SPECIAL_CODES`, NVTabular's own constants);
continuous features (missing -> training median) log + normalised, normalised or
bucketised. Then `SequenceGroupby` (NVTabular's Groupby + ListSlice, vectorised) groups the
sequence key, sorted by time, into lists of the last `max_length` events and takes context
features once per sequence. Fit on the training split only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import merlin.io
import nvtabular as nvt
import pandas as pd
from merlin.schema import Tags
from nvtabular.ops.categorify import NULL_OFFSET, OOV_OFFSET

from training.data import exact_stats, sequence_op
from training.data.codes import SPECIAL_CODES
from training.data.events import EventColumns
from training.data.exact_stats import ExactNormalize, FillExactMedian
from training.data.sequence_op import SequenceGroupby


@dataclass(frozen=True)
class WorkflowOptions:
    sequence_key: str  # the column rows are grouped by (user or session id)
    max_length: int = 200  # events kept per sequence (the last ones)
    min_item_frequency: int = 0  # items seen fewer times in training map to the OOV code
    continuous: str = "log-normalize"  # one of CONTINUOUS: log1p then z-score, z-score, or buckets
    buckets: int = 10  # quantile buckets when continuous == "bucketize"
    time_columns: tuple[str, ...] = ()  # derived time features (compiled.time_features): z-scored per-event lists


if (SPECIAL_CODES["null"], SPECIAL_CODES["oov"]) != (NULL_OFFSET, OOV_OFFSET):
    raise ImportError(f"training.data.codes.SPECIAL_CODES {SPECIAL_CODES} disagree with this NVTabular's Categorify "
                      f"(null {NULL_OFFSET}, OOV {OOV_OFFSET})")
CONTINUOUS = ("log-normalize", "normalize", "bucketize")


def _continuous(columns: list[str], options: WorkflowOptions, boundaries: dict[str, list[float]] | None):
    """Missing values take the training median, then log1p + z-score, z-score, or quantile buckets
    (median, mean and std exact on any partitioning: `training.data.exact_stats`)."""
    if options.continuous == "log-normalize":
        return columns >> FillExactMedian() >> nvt.ops.LogOp() >> ExactNormalize()
    if options.continuous == "normalize":
        return columns >> FillExactMedian() >> ExactNormalize()
    if options.continuous != "bucketize":
        raise ValueError(f"continuous transform: expected one of {list(CONTINUOUS)}, got {options.continuous!r}")
    # bucket codes from 1 (0 stays padding); each column's domain says how many there are
    blocks = [
        [column]
        >> FillExactMedian()
        >> nvt.ops.Bucketize({column: boundaries[column]})
        >> nvt.ops.LambdaOp(lambda buckets: buckets + 1)
        >> nvt.ops.AddTags([Tags.CATEGORICAL])
        >> nvt.ops.AddProperties({"domain": {"min": 0, "max": len(boundaries[column]) + 1}})
        for column in columns
    ]
    return sum(blocks[1:], blocks[0])


def build_workflow(
    columns: EventColumns,
    options: WorkflowOptions,
    categories_dir: Path,
    bucket_boundaries: dict[str, list[float]] | None = None,
) -> nvt.Workflow:
    """`bucket_boundaries` (column -> sorted cut points) is required for bucketize: quantiles of
    the training split, computed by the caller."""
    categorify = dict(out_path=str(categories_dir), dtype="int64")
    key = options.sequence_key
    item = (
        [columns.item]
        >> nvt.ops.Categorify(freq_threshold=options.min_item_frequency, **categorify)
        >> nvt.ops.AddTags([Tags.ITEM_ID, Tags.ITEM, Tags.ID])
    )
    features = item
    if columns.categorical:
        features += list(columns.categorical) >> nvt.ops.Categorify(**categorify) >> nvt.ops.AddTags([Tags.ITEM])
    if columns.continuous:
        features += _continuous(list(columns.continuous), options, bucket_boundaries) >> nvt.ops.AddTags([Tags.ITEM])
    if options.time_columns:  # already on a log or circular scale: z-scored only
        features += list(options.time_columns) >> ExactNormalize() >> nvt.ops.AddTags([Tags.ITEM])

    context = []
    context_columns = [c for c in (columns.user,) if c and c != key] + list(columns.context_categorical)
    if context_columns:
        context.append(context_columns >> nvt.ops.Categorify(**categorify) >> nvt.ops.AddTags([Tags.CONTEXT]))
    if columns.context_continuous:
        context.append(_continuous(list(columns.context_continuous), options, bucket_boundaries) >> nvt.ops.AddTags([Tags.CONTEXT]))

    key_tags = [Tags.USER_ID if key == columns.user else Tags.SESSION_ID, Tags.ID]
    grouped_inputs = features + ([key] >> nvt.ops.AddTags(key_tags)) + ([columns.time] >> nvt.ops.AddTags([Tags.TIME]))
    for block in context:
        grouped_inputs += block
    aggregations = {column: ["list"] for column in (columns.item, *columns.categorical, *columns.continuous, *options.time_columns)}
    aggregations[columns.time] = ["first"]
    for column in (*context_columns, *columns.context_continuous):
        aggregations[column] = ["first"]
    sequences = grouped_inputs >> SequenceGroupby(
        groupby_cols=[key], sort_cols=[columns.time], aggs=aggregations, max_length=options.max_length
    )
    return nvt.Workflow(sequences)


def fit_workflow(workflow: nvt.Workflow, train_events: pd.DataFrame | merlin.io.Dataset) -> nvt.Workflow:
    """Fit statistics (categories, means) on the training split's events only (a Dataset:
    partitioned over a Dask cluster, `training.data.distributed`)."""
    if isinstance(train_events, pd.DataFrame):
        train_events = merlin.io.Dataset(train_events, cpu=True)
    return workflow.fit(train_events)


def save_workflow(workflow: nvt.Workflow, path: Path) -> None:
    """Save with hf4rec's own ops by value: loading needs nvtabular, not hf4rec."""
    workflow.save(str(path), modules_byvalue=[sequence_op, exact_stats])
