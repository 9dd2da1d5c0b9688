"""Prepared splits as padded tensor batches.

Lists are stored flat (values + offsets) and padded per batch to the batch's longest row,
right-padded with 0 (the pad code; 0.0 for continuous values).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.data import prepared
from training.model.features import FeatureSpec


class SequenceData:
    def __init__(self, prepared_dir: Path, split: str, spec: FeatureSpec, min_length: int = 2):
        frame = prepared.read_split(prepared_dir, split)
        lengths = frame[spec.item].map(len).to_numpy()
        self.rows = np.flatnonzero(lengths >= min_length)  # each row's place in the stored split
        frame = frame[lengths >= min_length]  # a row needs an input and a target
        self.spec = spec
        self.lengths = frame[spec.item].map(len).to_numpy().astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])  # the stored sequences' bounds in `values`
        self.starts = self.offsets[:-1]  # each row's first event in `values` (a prefix view has several rows a sequence)
        self.values = {}
        for name in spec.list_columns:
            flat = np.concatenate(frame[name].to_numpy()) if len(frame) else np.zeros(0)
            self.values[name] = flat.astype(np.float32 if name in spec.continuous else np.int64)
        self.context = {name: frame[name].to_numpy() for name in spec.context_columns}
        self.history = None  # session-aware: (codes, each row's first code, each row's count)
        if spec.history:
            counts = frame[spec.history].map(len).to_numpy().astype(np.int64)
            codes = np.concatenate(frame[spec.history].to_numpy()).astype(np.int64) if counts.sum() else np.zeros(0, np.int64)
            self.history = (codes, np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64), counts)

    def __len__(self) -> int:
        return len(self.lengths)

    def prefixes(self) -> "SequenceData":
        """Every prefix of two or more events of every row, as rows (the `all` protocol: each next
        event predicted from the events before it), in row order, shortest first; context per row."""
        rows = np.repeat(np.arange(len(self)), np.maximum(self.lengths - 1, 0))
        firsts = np.concatenate([[0], np.cumsum(np.maximum(self.lengths - 1, 0))[:-1]]) if len(self) else rows
        view = object.__new__(SequenceData)
        view.spec, view.values, view.offsets = self.spec, self.values, self.offsets
        view.lengths = (np.arange(len(rows)) - firsts[rows] + 2).astype(np.int64)
        view.starts, view.rows = self.starts[rows], self.rows[rows]
        view.context = {name: values[rows] for name, values in self.context.items()}
        view.history = None if self.history is None else (self.history[0], self.history[1][rows], self.history[2][rows])
        return view

    def item_counts(self) -> torch.Tensor:
        return torch.bincount(torch.from_numpy(self.values[self.spec.item]), minlength=self.spec.item_cardinality)

    def batch(self, rows: np.ndarray, drop_last_event: bool = False) -> dict[str, torch.Tensor]:
        """Right-padded tensors for `rows`; with drop_last_event the inputs stop before each row's
        last event (returned as "targets")."""
        lengths = self.lengths[rows] - int(drop_last_event)
        width = int(lengths.max()) if len(rows) else 0
        positions = np.arange(width)
        valid = positions[None, :] < lengths[:, None]
        index = np.where(valid, self.starts[rows][:, None] + positions[None, :], 0)
        out = {}
        for name, values in self.values.items():
            out[name] = torch.from_numpy(np.where(valid, values[index], 0).astype(values.dtype))
        for name, values in self.context.items():
            dtype = np.float32 if name in self.spec.context_continuous else np.int64
            out[name] = torch.from_numpy(values[rows].astype(dtype))
        if self.history is not None:
            codes, starts, counts = self.history
            counts = counts[rows]
            positions = np.arange(max(int(counts.max()) if len(rows) else 0, 1))
            valid = positions[None, :] < counts[:, None]
            out[self.spec.history] = torch.from_numpy(np.where(valid, codes[np.where(valid, starts[rows][:, None] + positions, 0)], 0)
                                                      if len(codes) else np.zeros(valid.shape, np.int64))
        if drop_last_event:
            out["targets"] = torch.from_numpy(self.values[self.spec.item][self.starts[rows] + lengths])
        return out

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last_event: bool = False,
                bucket_batches: int = 0):
        """Batches of rows; shuffled by `seed`. With `bucket_batches` > 0, each run of that many
        shuffled batches is sorted by length before cutting, so batches hold similar lengths
        (less padding), and the batch order is shuffled again."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self)) if shuffle else np.arange(len(self))
        if bucket_batches:
            span = batch_size * bucket_batches
            order = np.concatenate([group[np.argsort(self.lengths[group], kind="stable")]
                                    for group in np.split(order, range(span, len(order), span))]) if len(order) else order
        starts = np.arange(0, len(order), batch_size)
        if bucket_batches and shuffle:
            starts = rng.permutation(starts)
        for start in starts:
            yield self.batch(order[start:start + batch_size], drop_last_event=drop_last_event)
