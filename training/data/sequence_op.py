"""`SequenceGroupby`: NVTabular's Groupby + ListSlice in one vectorised operator.

NVTabular's Groupby aggregates lists through pandas' per-group Python path (about 25 s
for 1M events on this machine) and its LocalExecutor re-runs a Groupby once per
downstream branch. This operator gives the same output as
`Groupby(groupby_cols, sort_cols, aggs) >> ListSlice(-max_length)` (same column names,
dtypes and schema, rows sorted by key) with one stable sort and array slicing, so one
operator node ends the graph and nothing upstream runs twice.

Ties in the sort columns keep the input order (a stable sort), which pandas' default
quicksort in Groupby does not promise.

The saved workflow carries this class by value (see `training.data.workflow.save_workflow`),
so loading it, in Triton too, needs no hf4rec code.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from merlin.dtypes.shape import Shape
from merlin.schema import Tags
from nvtabular.ops import Groupby, ListSlice
from nvtabular.ops.groupby import _get_agg_dicts

_SUPPORTED = {"list", "first", "last", "count"}


class SequenceGroupby(Groupby):
    def __init__(self, groupby_cols, sort_cols, aggs, max_length: int, name_sep: str = "_"):
        if max_length < 1:
            raise ValueError(f"max_length: expected >= 1, got {max_length}")
        super().__init__(groupby_cols=groupby_cols, sort_cols=sort_cols, aggs=aggs, name_sep=name_sep)
        self.max_length = max_length

    def transform(self, col_selector, df):
        list_aggs, conv_aggs = _get_agg_dicts(self.groupby_cols, self.list_aggs, self.conv_aggs, col_selector)
        aggs = {col: sorted(set(list_aggs.get(col, [])) | {a for a in conv_aggs.get(col, []) if a is not list}) for col in set(list_aggs) | set(conv_aggs)}
        if not isinstance(df, pd.DataFrame) or any(set(a) - _SUPPORTED for a in aggs.values()):
            grouped = super().transform(col_selector, df)
            list_columns = [c for c in grouped.columns if c.endswith(f"{self.name_sep}list")]
            return ListSlice(-self.max_length).transform(list_columns, grouped) if list_columns else grouped

        sort_keys = [df[c].to_numpy() for c in (*self.groupby_cols, *self.sort_cols)]
        order = np.lexsort(sort_keys[::-1])  # stable; the first groupby column is the primary key
        sorted_keys = [values[order] for values in sort_keys[: len(self.groupby_cols)]]
        n_events = len(order)
        new_group = np.zeros(n_events, dtype=bool)
        if n_events:
            new_group[0] = True
            for values in sorted_keys:
                new_group[1:] |= values[1:] != values[:-1]
        starts = np.flatnonzero(new_group)
        ends = np.append(starts[1:], n_events)
        kept = np.minimum(ends - starts, self.max_length)
        offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(kept, out=offsets[1:])
        kept_index = np.arange(offsets[-1]) + np.repeat(ends - kept - offsets[:-1], kept)

        out = {name: values[starts] for name, values in zip(self.groupby_cols, sorted_keys)}
        for col, col_aggs in aggs.items():
            values = df[col].to_numpy()[order]
            for agg in col_aggs:
                name = f"{col}{self.name_sep}{agg}"
                if agg == "list":
                    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values[kept_index]))
                    out[name] = lists.to_pandas()
                elif agg == "first":
                    out[name] = values[starts]
                elif agg == "last":
                    out[name] = values[ends - 1]
                elif agg == "count":
                    out[name] = (ends - starts).astype(np.int32)
        return pd.DataFrame(out, index=pd.RangeIndex(len(starts)))

    transform.__doc__ = Groupby.transform.__doc__

    def _compute_tags(self, col_schema, input_schema):
        col_schema = super()._compute_tags(col_schema, input_schema)
        if col_schema.name.endswith(f"{self.name_sep}list"):
            return col_schema.with_tags([Tags.LIST])
        return col_schema

    def _compute_shape(self, col_schema, input_schema):
        col_schema = super()._compute_shape(col_schema, input_schema)
        if col_schema.is_list:
            return col_schema.with_shape(Shape((None, (0, self.max_length))))
        return col_schema
