"""Continuous-feature statistics that do not depend on how the events are partitioned.

NVTabular's `FillMedian` merges approximate per-partition quantiles (a median of 19.99 on
one partition, 20.48 on four for the same prices) and `Normalize` adds float32 partition
sums, so a Dask prepare would not equal one process. These ops gather a column's values
once (the caller holds the training events in memory anyway) and compute the exact median,
and a correctly rounded mean and standard deviation (`math.fsum`, order-free): the same
statistics on any partitioning.

The saved workflow carries these classes by value (see `training.data.workflow.save_workflow`),
so loading it needs no hf4rec code.
"""
from __future__ import annotations

import math

import numpy as np
from nvtabular.ops import FillMedian, Normalize


def _values(frame, column: str) -> np.ndarray:
    return frame[column].dropna().to_numpy(dtype=np.float64)


class FillExactMedian(FillMedian):
    def fit(self, col_selector, ddf):
        return ddf[col_selector.names]  # every value: an exact median needs them at once

    def fit_finalize(self, frame):
        for column in frame.columns:
            values = _values(frame, column)
            if not len(values):
                raise ValueError(f"continuous column {column!r}: expected values in the training events, got only missing ones")
            self.medians[column] = float(np.median(values))


class ExactNormalize(Normalize):
    def fit(self, col_selector, ddf):
        return ddf[col_selector.names]

    def fit_finalize(self, frame):
        for column in frame.columns:
            values = _values(frame, column)
            mean = math.fsum(values) / len(values)
            self.means[column] = mean
            self.stds[column] = math.sqrt(math.fsum((values - mean) ** 2) / max(len(values) - 1, 1))  # ddof=1, as Normalize
