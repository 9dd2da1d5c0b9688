"""Raw session events -> model inputs, as the fitted workflow computes them, in numpy.

`RequestTransform(folder)` reads `transform.json` (written by `python -m export` from the
fitted workflow) and the workflow's category files. `transform(columns, event_count)` takes
one request: every raw column [B, W] right-padded, `event_count` [B] real events per row.
Per session, as `workflow.transform` does: events sorted by time (stable), context values
from the earliest event, the last `model_events` events kept (and, for the model's seen-item
filter when it reads fewer, the codes of the last `max_events` items), categories looked up (unknown
-> OOV code, codes from the files' index), missing continuous values -> training median,
log1p / z-score / buckets; list outputs right-padded with 0 to a fixed width
(`model_events`; seen items `max_events`), whatever the request's length: the model step's
inputs then have one shape, so Triton's dynamic batcher can merge requests there (the model
trims the common padding off again).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

def _padded(values: np.ndarray, real: np.ndarray, width: int, dtype) -> np.ndarray:
    """[B, w] values where `real`, 0 elsewhere and in the columns up to `width` (np.pad costs
    more than this whole copy on request-sized arrays)."""
    out = np.zeros((values.shape[0], width), dtype=dtype)
    out[:, : values.shape[1]] = np.where(real, values, 0)
    return out


class RequestError(ValueError):
    """A bad request: the message names the input, the expected and the received value."""


class _Categories:
    """Value -> code of one categorified column: a dict for text, binary search for numbers."""

    def __init__(self, path: Path, oov_code: int):
        self.oov_code = oov_code
        table = pd.read_parquet(path)
        values = table[table.columns[0]]
        codes = values.index.to_numpy().astype(np.int64)
        self.text = values.dtype == object
        if self.text:  # requests carry text as utf-8 bytes
            self.lookup = {(v.encode() if isinstance(v, str) else v): int(c) for v, c in zip(values, codes)}
        else:
            order = np.argsort(values.to_numpy(), kind="stable")
            self.sorted_values, self.sorted_codes = values.to_numpy()[order], codes[order]

    def encode(self, values: np.ndarray) -> np.ndarray:
        if self.text:
            get, oov = self.lookup.get, self.oov_code
            return np.fromiter((get(v, oov) for v in values.ravel()), np.int64, values.size).reshape(values.shape)
        if not len(self.sorted_values):
            return np.full(values.shape, self.oov_code, np.int64)
        at = np.minimum(np.searchsorted(self.sorted_values, values), len(self.sorted_values) - 1)
        return np.where(self.sorted_values[at] == values, self.sorted_codes[at], self.oov_code)


class RequestTransform:
    def __init__(self, folder: Path, max_request_events: int | None = None, max_id_bytes: int | None = None,
                 spec: dict | None = None):
        """The bounds (None: unbounded, for offline use) come from the step's config, written by export.
        `folder` holds transform.json (unless `spec` is given) and workflow/categories/."""
        folder = Path(folder)
        self.spec = spec if spec is not None else json.loads((folder / "transform.json").read_text())
        self.inputs = {item["name"]: item["dtype"] for item in self.spec["inputs"]}
        self.time_column = self.spec["time_column"]
        self.max_events = int(self.spec["max_events"])  # events of a session the workflow keeps
        self.model_events = int(self.spec["model_events"])  # of those, the last ones the model reads
        self.seen = self.spec.get("seen")  # {"name", "source"}: output the session's item codes too
        self.max_request_events = max_request_events  # events per request, summed over its sessions (padding too)
        self.max_id_bytes = max_id_bytes  # bytes per string value
        self.outputs = self.spec["outputs"]
        self.categories = {
            step["categories"]: _Categories(folder / "workflow" / step["categories"], int(self.spec["oov_code"]))
            for output in self.outputs for step in output["steps"] if step["op"] == "categorify"
        }

    def check(self, columns: dict[str, np.ndarray], event_count: np.ndarray) -> None:
        rows = len(event_count)
        width = None
        for name in self.inputs:
            values = columns[name]
            if values.ndim != 2 or values.shape[0] != rows:
                raise RequestError(f"input {name!r}: expected shape [{rows}, events], got {list(values.shape)}")
            if width is not None and values.shape[1] != width:
                raise RequestError(f"input {name!r}: expected {width} events per row like the other inputs, got {values.shape[1]}")
            width = values.shape[1]
        if self.max_request_events is not None and rows * width > self.max_request_events:
            raise RequestError(f"input {self.time_column!r} and the other event inputs: expected at most "
                               f"{self.max_request_events} events per request (sessions x events per row), "
                               f"got {rows} x {width} = {rows * width}")
        bad = np.flatnonzero((event_count < 1) | (event_count > width))
        if len(bad):
            raise RequestError(f"input 'event_count': expected 1..{width} (the row's width) for every session, "
                               f"got {int(event_count[bad[0]])} for session {int(bad[0])}")
        for name, dtype in self.inputs.items():
            if dtype == "string" and self.max_id_bytes is not None and columns[name].size:
                sizes = np.fromiter(map(len, columns[name].ravel()), np.int64, columns[name].size)
                if sizes.max() > self.max_id_bytes:
                    row = int(np.argmax(sizes) // width)
                    raise RequestError(f"input {name!r}: expected values of at most {self.max_id_bytes} bytes, "
                                       f"got {int(sizes.max())} bytes in session {row}")
            if dtype == "float64" and np.isinf(columns[name]).any():
                row = int(np.flatnonzero(np.isinf(columns[name]).any(axis=1))[0])
                raise RequestError(f"input {name!r}: expected finite numbers (NaN means missing), got inf in session {row}")

    def transform(self, columns: dict[str, np.ndarray], event_count: np.ndarray) -> dict[str, np.ndarray]:
        event_count = np.asarray(event_count, dtype=np.int64).reshape(-1)
        self.check(columns, event_count)
        rows, width = len(event_count), columns[self.time_column].shape[1]
        real = np.arange(width)[None, :] < event_count[:, None]
        times = np.where(real, columns[self.time_column], np.iinfo(np.int64).max)
        order = np.argsort(times, axis=1, kind="stable")  # real events first, in time order
        first = order[:, 0]
        out = {}
        row_index = np.arange(rows)[:, None]
        model_index, model_real = self._last(order, event_count, self.model_events)
        for output in self.outputs:
            raw = columns[output["source"]]
            if output["kind"] == "list":
                values = self._apply(output, raw[row_index, model_index])
                out[output["name"]] = _padded(values, model_real, self.model_events, output["dtype"])
            else:
                values = self._apply(output, raw[row_index[:, 0], first][:, None])
                out[output["name"]] = values.astype(output["dtype"])
        if self.seen:  # the session's items the model leaves out: all the workflow keeps, more than it reads
            item = next(o for o in self.outputs if o["source"] == self.seen["source"] and o["kind"] == "list")
            seen_index, seen_real = self._last(order, event_count, self.max_events)
            codes = self._apply(item, columns[item["source"]][row_index, seen_index])
            out[self.seen["name"]] = _padded(codes, seen_real, self.max_events, np.int64)
        return out

    @staticmethod
    def _last(order: np.ndarray, event_count: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of each row's last n events in time order, right-padded, and their mask."""
        kept = np.minimum(event_count, n)
        positions = np.arange(int(kept.max()))[None, :]
        start = (event_count - kept)[:, None]
        index = order[np.arange(len(order))[:, None], np.minimum(start + positions, order.shape[1] - 1)]
        return index, positions < kept[:, None]

    def _apply(self, output: dict, values: np.ndarray) -> np.ndarray:
        for step in output["steps"]:
            op = step["op"]
            if op == "categorify":
                values = self.categories[step["categories"]].encode(values)
            elif op == "fill":
                values = np.where(np.isnan(values), step["value"], values)
            elif op == "log1p":
                values = np.log(values.astype(np.float32) + 1)
            elif op == "normalize":
                values = values - step["mean"]
                values = values / step["std"] if step["std"] > 0 else values
                values = values.astype(np.float32)
            elif op == "bucketize":
                values = np.digitize(values, np.asarray(step["boundaries"]), right=False).astype(np.int32)
            elif op == "add":
                values = values + np.asarray(step["value"]).astype(values.dtype)
            else:
                raise RequestError(f"transform.json: unknown step {op!r} for {output['name']!r}")
        return values
