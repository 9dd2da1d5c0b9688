"""Raw session events -> model inputs, as the fitted workflow computes them, in numpy.

`RequestTransform(folder)` reads `transform.json` (written by `python -m export` from the
fitted workflow) and the workflow's category files. `transform(columns, event_count)` takes
one request: every raw column [B, W] right-padded, `event_count` [B] real events per row.
Per session, as `workflow.transform` does: events sorted by time (stable), context values
from the earliest event, the last `model_events` events kept (and, for the model's seen-item
filter when it reads fewer, the codes of the last `max_events` items), categories looked up (unknown
-> OOV code, codes from the files' index), missing continuous values -> training median,
log1p / z-score / buckets; time features derived from the sorted times before the last events
are kept (`time_features`, the one definition `training.prepare` uses too); list outputs right-padded with 0 to a fixed width
(`model_events`; seen items `max_events`), whatever the request's length: the model step's
inputs then have one shape, so Triton's dynamic batcher can merge requests there (the model
trims the common padding off again).

Session-aware models (`history` in the spec) also take the user's earlier events per session:
the spec's `history["inputs"]` (named by model_repository/contract.py): the history's items and times
[B, H'] right-padded, and its count [B] (0 allowed). Of
those, the events strictly before the session's first event are kept (never its own), sorted by
time (stable), the last `history["events"]`, their items encoded as the session's items are:
`history_item_list` [B, events] right-padded with 0 (`history_codes`, also what prepare stores).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

# a time feature -> the columns it derives from each event's time (unix seconds)
TIME_FEATURES = {
    "gap": ("time_gap_log",),  # log1p(seconds since the previous event of the sequence), 0 for its first
    "elapsed": ("time_elapsed_log",),  # log1p(seconds since the sequence's first event)
    "hour": ("hour_sin", "hour_cos"),  # the time of day on a circle, in the --timezone
    "weekday": ("weekday_sin", "weekday_cos"),  # the time of week on a circle (Monday 0:00 = angle 0)
    # from the event's item and time, by the item's training statistics (ITEM_TIMES; 0 for an item unknown to training)
    "age": ("item_age_log",),  # log1p(seconds since the item's first training event), 0 before it
    "recent": ("item_recent_log",),  # log1p(the item's training events in training's last RECENT_DAYS days)
}
ITEM_FEATURES = ("age", "recent")  # the features that read ITEM_TIMES
ITEM_TIMES = "item_times.parquet"  # in the workflow folder: item, first_time, recent_events (training only)
RECENT_DAYS = 7


def fit_item_times(items: pd.Series, times: np.ndarray) -> pd.DataFrame:
    """Training events' items and times -> per item its first time and its events in the last
    RECENT_DAYS days before training's last event (the table ITEM_TIMES holds)."""
    times = np.asarray(times, dtype=np.int64)
    recent = times > (times.max() - RECENT_DAYS * 86_400 if len(times) else 0)
    frame = pd.DataFrame({"item": items.to_numpy(), "first_time": times, "recent_events": recent.astype(np.int64)})
    table = frame.groupby("item", sort=True).agg(first_time=("first_time", "min"), recent_events=("recent_events", "sum"))
    return table.reset_index()


class ItemTimes:
    """The ITEM_TIMES table as a lookup of request values (text as utf-8 bytes, as requests carry it)."""

    def __init__(self, path: Path | None, table: pd.DataFrame | None = None):
        table = pd.read_parquet(path) if table is None else table.reset_index(drop=True)
        self.rows = _Categories(path, -1, table)  # item value -> its row, -1 unknown
        self.first_time = table["first_time"].to_numpy(np.int64)
        self.recent = np.log1p(table["recent_events"].to_numpy(np.float64))

    def features(self, features, items: np.ndarray, times: np.ndarray) -> dict[str, np.ndarray]:
        """The item features of events (`items`, `times` of one shape): {column: float64}."""
        row = self.rows.encode(items)
        known = row >= 0
        out = {}
        if "age" in features:
            age = np.maximum(np.asarray(times, np.int64) - self.first_time[np.where(known, row, 0)], 0)
            out["item_age_log"] = np.where(known, np.log1p(age.astype(np.float64)), 0.0)
        if "recent" in features:
            out["item_recent_log"] = np.where(known, self.recent[np.where(known, row, 0)], 0.0)
        return out


def time_features(features, times: np.ndarray, first: np.ndarray, timezone: str = "UTC") -> dict[str, np.ndarray]:
    """Columns of `features` (names of TIME_FEATURES) for events whose `times` (unix seconds) are
    sorted within each sequence, `first` marking each sequence's first event: {column: float64 [N]}.
    Only earlier events of the same sequence enter an event's values."""
    times = np.asarray(times, dtype=np.int64)
    out = {}
    if "gap" in features or "elapsed" in features:
        previous = np.r_[times[:1], times[:-1]]
        out["time_gap_log"] = np.log1p(np.where(first, 0, np.maximum(times - previous, 0)).astype(np.float64))
        start = np.maximum.accumulate(np.where(first, np.arange(len(times)), 0)) if len(times) else times
        out["time_elapsed_log"] = np.log1p(np.maximum(times - times[start], 0).astype(np.float64))
    if "hour" in features or "weekday" in features:
        local = pd.DatetimeIndex(pd.to_datetime(times, unit="s", utc=True)).tz_convert(timezone)
        day = (local.hour.to_numpy() * 3600 + local.minute.to_numpy() * 60 + local.second.to_numpy()) / 86_400.0
        week = (local.dayofweek.to_numpy() + day) / 7.0
        out.update(hour_sin=np.sin(2 * np.pi * day), hour_cos=np.cos(2 * np.pi * day),
                   weekday_sin=np.sin(2 * np.pi * week), weekday_cos=np.cos(2 * np.pi * week))
    wanted = {column for feature in features for column in TIME_FEATURES[feature]}
    return {column: values for column, values in out.items() if column in wanted}


def _padded(values: np.ndarray, real: np.ndarray, width: int, dtype) -> np.ndarray:
    """[B, w] values where `real`, 0 elsewhere and in the columns up to `width` (np.pad costs
    more than this whole copy on request-sized arrays)."""
    out = np.zeros((values.shape[0], width), dtype=dtype)
    out[:, : values.shape[1]] = np.where(real, values, 0)
    return out


# The ordering rule, for the served and the offline path alike (training.recommend and training.predict
# run this transform): a sequence's events sorted by time, ties in the order they came (a stable sort);
# the last n kept; context values from the earliest. prepare's SequenceGroupby applies it to the training
# data (tests/test_export.py holds the two equal); the client keeps a copy to stay free of this module
# (tests/test_ordering_rule.py holds it to this one).


def time_order(times: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Each row's positions [B, W] by time, ties in the order sent (stable), the `real` events [B, W]
    first: position 0 is the earliest real event."""
    return np.argsort(np.where(real, times, np.iinfo(np.int64).max), axis=1, kind="stable")


def history_order(times: np.ndarray, count: np.ndarray, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Which history events a session reads: of each row's first `count` events [B, H'], those
    strictly before the session's `starts` [B], by time (stable: ties keep their order), the last
    `n`. -> (their positions [B, <= n] right-padded, mask)."""
    width = times.shape[1]
    real = (np.arange(width)[None, :] < count[:, None]) & (times < starts[:, None])
    return last_events(time_order(times, real), real.sum(axis=1), n)


def last_events(order: np.ndarray, count: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of each row's last n of its `count` events in time order (`order`: real events
    first, by time), right-padded, and their mask."""
    kept = np.minimum(count, n)
    positions = np.arange(int(kept.max(initial=0)))[None, :]
    start = (count - kept)[:, None]
    index = order[np.arange(len(order))[:, None], np.clip(start + positions, 0, max(order.shape[1] - 1, 0))]
    return index, positions < kept[:, None]


def reads_item_times(time_features: dict | None) -> bool:
    """Whether the time features read the items' training statistics (ITEM_TIMES)."""
    return bool(set((time_features or {}).get("features", [])) & set(ITEM_FEATURES))


class RequestError(ValueError):
    """A bad request: the message names the input, the expected and the received value."""


class _Categories:
    """Value -> code of one categorified column: a dict for text, binary search for numbers."""

    def __init__(self, path: Path, oov_code: int, table: pd.DataFrame | None = None):
        self.oov_code = oov_code
        table = pd.read_parquet(path) if table is None else table
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
        self.time_features = self.spec.get("time_features") or {"features": [], "timezone": "UTC"}
        self.item_times = ItemTimes(folder / "workflow" / ITEM_TIMES) if reads_item_times(self.time_features) else None
        self.history = self.spec.get("history")  # {"name", "source", "events", "inputs": {"item", "time", "count"}}
        self.history_inputs = dict(self.history["inputs"]) if self.history else {}
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
        if self.history:
            self._check_history(columns, rows)
        for name, dtype in self._value_inputs().items():
            width = columns[name].shape[1]
            if dtype == "string" and self.max_id_bytes is not None and columns[name].size:
                sizes = np.fromiter(map(len, columns[name].ravel()), np.int64, columns[name].size)
                if sizes.max() > self.max_id_bytes:
                    row = int(np.argmax(sizes) // width)
                    raise RequestError(f"input {name!r}: expected values of at most {self.max_id_bytes} bytes, "
                                       f"got {int(sizes.max())} bytes in session {row}")
            if dtype == "float64" and np.isinf(columns[name]).any():
                row = int(np.flatnonzero(np.isinf(columns[name]).any(axis=1))[0])
                raise RequestError(f"input {name!r}: expected finite numbers (NaN means missing), got inf in session {row}")

    def _value_inputs(self) -> dict[str, str]:
        """Every input holding event values -> its dtype (history items are items)."""
        if not self.history:
            return self.inputs
        return {**self.inputs, self.history_inputs["item"]: self.inputs[self.history["source"]]}

    def _check_history(self, columns: dict[str, np.ndarray], rows: int) -> None:
        items, times, count = (self.history_inputs[role] for role in ("item", "time", "count"))
        width = columns[items].shape[1] if columns[items].ndim == 2 else -1
        for name in (items, times):
            if columns[name].ndim != 2 or columns[name].shape[0] != rows or columns[name].shape[1] != width:
                raise RequestError(f"input {name!r}: expected shape [{rows}, history events] like {items!r}, "
                                   f"got {list(columns[name].shape)}")
        if self.max_request_events is not None and rows * width > self.max_request_events:
            raise RequestError(f"input {items!r}: expected at most {self.max_request_events} history events per request "
                               f"(sessions x events per row), got {rows} x {width} = {rows * width}")
        counts = np.asarray(columns[count]).reshape(-1)
        bad = np.flatnonzero((counts < 0) | (counts > width)) if len(counts) == rows else [0]
        if len(bad):
            got = f"{int(counts[bad[0]])} for session {int(bad[0])}" if len(counts) == rows else f"{len(counts)} values"
            raise RequestError(f"input {count!r}: expected 0..{width} (the history rows' width) for each of {rows} "
                               f"sessions, got {got}")

    def transform(self, columns: dict[str, np.ndarray], event_count: np.ndarray) -> dict[str, np.ndarray]:
        event_count = np.asarray(event_count, dtype=np.int64).reshape(-1)
        self.check(columns, event_count)
        rows, width = len(event_count), columns[self.time_column].shape[1]
        real = np.arange(width)[None, :] < event_count[:, None]
        order = time_order(columns[self.time_column], real)
        first = order[:, 0]  # the earliest event sent: the context values
        out = {}
        row_index = np.arange(rows)[:, None]
        model_index, model_real = last_events(order, event_count, self.model_events)
        derived = self._derived(columns[self.time_column], order, event_count)
        if self.item_times is not None:  # per event, from its item and time
            item = self.time_features["item_column"]
            derived.update(self.item_times.features(self.time_features["features"], columns[item], columns[self.time_column]))
        for output in self.outputs:
            raw = derived[output["source"]] if output["source"] in derived else columns[output["source"]]
            if output["kind"] == "list":
                values = self._apply(output, raw[row_index, model_index])
                out[output["name"]] = _padded(values, model_real, self.model_events, output["dtype"])
            else:
                values = self._apply(output, raw[row_index[:, 0], first][:, None])
                out[output["name"]] = values.astype(output["dtype"])
        if self.seen:  # the session's items the model leaves out: all the workflow keeps, more than it reads
            item = next(o for o in self.outputs if o["source"] == self.seen["source"] and o["kind"] == "list")
            seen_index, seen_real = last_events(order, event_count, self.max_events)
            codes = self._apply(item, columns[item["source"]][row_index, seen_index])
            out[self.seen["name"]] = _padded(codes, seen_real, self.max_events, np.int64)
        if self.history:
            start = columns[self.time_column][np.arange(rows), first]  # the session's earliest event sent
            out[self.history["name"]] = self.history_codes(columns, start)
        return out

    def history_codes(self, columns: dict[str, np.ndarray], starts: np.ndarray) -> np.ndarray:
        """The sessions' history item codes [B, events], right-padded with 0 (`history_order`)."""
        items, times, count = (columns[self.history_inputs[role]] for role in ("item", "time", "count"))
        n = int(self.history["events"])
        index, real = history_order(np.asarray(times, dtype=np.int64), np.asarray(count, dtype=np.int64).reshape(-1), starts, n)
        item = next(o for o in self.outputs if o["source"] == self.history["source"] and o["kind"] == "list")
        values = items[np.arange(len(starts))[:, None], index]
        return _padded(self._apply(item, values), real, n, np.int64)

    def _derived(self, times: np.ndarray, order: np.ndarray, event_count: np.ndarray) -> dict[str, np.ndarray]:
        """The time features of every real event [B, W], at the events' places in the request, over
        the last `max_events` (the workflow's sequences; the first kept starts gap and elapsed)."""
        features = self.time_features["features"]
        if not features:
            return {}
        rows, width = times.shape
        sorted_real = np.arange(width)[None, :] < event_count[:, None]  # after `order`: real events first
        row_index = np.broadcast_to(np.arange(rows)[:, None], (rows, width))[sorted_real]
        place = order[sorted_real]
        kept_from = (event_count - np.minimum(event_count, self.max_events))[:, None]  # the first event kept
        first = (np.broadcast_to(np.arange(width)[None, :], (rows, width)) == kept_from)[sorted_real]
        values = time_features(features, times[row_index, place], first, self.time_features["timezone"])
        out = {}
        for column, flat in values.items():
            out[column] = np.zeros((rows, width), dtype=np.float64)
            out[column][row_index, place] = flat
        return out

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
